"""Bounded window of recent chat messages, persisted per session in a `StateStore`.

The window is a small JSON blob saved under a session id derived from the
chat session's id (``<session_id>`` + :data:`WINDOW_SESSION_SUFFIX`), in the
same store that contains the engine state. Every append trims it to the limits,
so its size stays bounded however long the session runs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.messages import BaseMessage, messages_from_dict, messages_to_dict, trim_messages

from sidecar_memory.stores import StateBlob, StateStore, StoredState
from sidecar_memory.stores.base import SESSION_ID_MAX_LENGTH, validate_session_id

logger = logging.getLogger(__name__)

WINDOW_SESSION_SUFFIX = "@recent-messages"
"""Suffix that turns a chat session id into the store id of its recent-message window."""

WINDOW_FILE_NAME = "messages.json"
"""Name of the file inside the window blob."""

WINDOW_FORMAT = 1
"""Version of the JSON layout written to :data:`WINDOW_FILE_NAME`."""

DEFAULT_WINDOW_MESSAGES = 12
"""Default number of recent messages kept in the window (six human/AI exchanges)."""

TokenCounter = Callable[[Sequence[BaseMessage]], int]


def window_session_id(session_id: str) -> str:
    """Return the store id under which the window of ``session_id`` is saved.

    Raises:
        ValueError: ``session_id`` is invalid or too long to take the suffix.
    """
    validate_session_id(session_id)
    derived = session_id + WINDOW_SESSION_SUFFIX
    if len(derived) > SESSION_ID_MAX_LENGTH:
        limit = SESSION_ID_MAX_LENGTH - len(WINDOW_SESSION_SUFFIX)
        raise ValueError(
            f"session id {session_id!r} has {len(session_id)} characters; the chat history adapters "
            f"accept at most {limit} so that the window id (with suffix {WINDOW_SESSION_SUFFIX!r}) stays valid."
        )
    return derived


class MessageWindow:
    """The last messages of one session, bounded by a message count, a token count or both.

    ``max_messages`` and ``max_tokens`` are upper limits; ``None`` switches a limit
    off, but at least one must be set. ``token_counter`` counts the tokens of a
    list of messages and is required when ``max_tokens`` is set. After trimming,
    the window starts at a human message, so it never opens with an orphan reply.
    """

    def __init__(
        self,
        store: StateStore,
        session_id: str,
        *,
        max_messages: int | None = DEFAULT_WINDOW_MESSAGES,
        max_tokens: int | None = None,
        token_counter: TokenCounter | None = None,
    ) -> None:
        if max_messages is None and max_tokens is None:
            raise ValueError("set max_messages, max_tokens or both; an unbounded window would grow the prompt forever.")
        if max_messages is not None and max_messages < 0:
            raise ValueError(f"max_messages must be >= 0 or None, got {max_messages}")
        if max_tokens is not None and max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0 or None, got {max_tokens}")
        if max_tokens is not None and token_counter is None:
            raise ValueError("max_tokens needs a token_counter that counts the tokens of a list of messages.")
        self.store = store
        self.session_id = session_id
        self.store_id = window_session_id(session_id)
        self.max_messages = max_messages
        self.max_tokens = max_tokens
        self.token_counter = token_counter

    # -- reading --------------------------------------------------------------

    def load(self) -> list[BaseMessage]:
        """Return the stored messages, oldest first (empty when nothing is stored)."""
        return _decode(self.store.load(self.store_id), self.store_id)

    async def aload(self) -> list[BaseMessage]:
        """Async `load`."""
        return _decode(await self.store.aload(self.store_id), self.store_id)

    # -- writing --------------------------------------------------------------

    def extend(self, messages: Sequence[BaseMessage]) -> list[BaseMessage]:
        """Append ``messages``, trim to the limits, save with compare-and-set and return the window."""
        saved: list[list[BaseMessage]] = []

        def apply(current: StoredState | None) -> StateBlob:
            window = self.trim([*_decode(current, self.store_id), *messages])
            saved[:] = [window]
            return _encode(window)

        self.store.update(self.store_id, apply)
        return saved[0]

    async def aextend(self, messages: Sequence[BaseMessage]) -> list[BaseMessage]:
        """Async `extend`."""
        saved: list[list[BaseMessage]] = []

        async def apply(current: StoredState | None) -> StateBlob:
            window = self.trim([*_decode(current, self.store_id), *messages])
            saved[:] = [window]
            return _encode(window)

        await self.store.aupdate(self.store_id, apply)
        return saved[0]

    def clear(self) -> None:
        """Delete the stored window."""
        self.store.delete(self.store_id)

    async def aclear(self) -> None:
        """Async `clear`."""
        await self.store.adelete(self.store_id)

    # -- trimming -------------------------------------------------------------

    def trim(self, messages: Sequence[BaseMessage]) -> list[BaseMessage]:
        """Return the newest messages that fit both limits, starting at a human message."""
        window = list(messages)
        if self.max_messages is not None:
            window = _trim_last(window, max_tokens=self.max_messages, token_counter=len)
        if self.max_tokens is not None and self.token_counter is not None:
            window = _trim_last(window, max_tokens=self.max_tokens, token_counter=self.token_counter)
        return window


def _trim_last(messages: list[BaseMessage], *, max_tokens: int, token_counter: Any) -> list[BaseMessage]:
    if not messages:
        return []
    return trim_messages(
        messages,
        max_tokens=max_tokens,
        token_counter=token_counter,
        strategy="last",
        start_on="human",
        allow_partial=False,
    )


def _encode(messages: Sequence[BaseMessage]) -> StateBlob:
    payload = {"format": WINDOW_FORMAT, "messages": messages_to_dict(list(messages))}
    return StateBlob({WINDOW_FILE_NAME: json.dumps(payload, ensure_ascii=False).encode("utf-8")})


def _decode(stored: StoredState | None, store_id: str) -> list[BaseMessage]:
    if stored is None:
        return []
    raw = stored.blob.files.get(WINDOW_FILE_NAME)
    if raw is None:
        raise ValueError(
            f"stored window {store_id!r} (version {stored.version}) has no {WINDOW_FILE_NAME!r}; "
            f"another program saved something else under this id. Delete it or use another session id."
        )
    payload = json.loads(raw)
    if not isinstance(payload, dict) or payload.get("format") != WINDOW_FORMAT:
        raise ValueError(
            f"stored window {store_id!r} has format {payload.get('format') if isinstance(payload, dict) else None!r}, "
            f"expected {WINDOW_FORMAT}; upgrade sidecar-memory or delete the window."
        )
    return messages_from_dict(payload["messages"])
