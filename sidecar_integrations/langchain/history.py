"""`SidecarChatMessageHistory`: a LangChain chat message history backed by sidecar-memory.

Use it wherever a ``BaseChatMessageHistory`` goes, for example as the
``get_session_history`` factory of ``RunnableWithMessageHistory``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sidecar_integrations.langchain._extras import require_module

require_module("langchain_core", purpose="SidecarChatMessageHistory")

from langchain_core.chat_history import BaseChatMessageHistory  # noqa: E402
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage  # noqa: E402

from sidecar_integrations.langchain._session import (  # noqa: E402
    ASSISTANT_ROLE,
    DEFAULT_RECALL_K,
    USER_ROLE,
    default_store,
    open_session,
    render_memory_text,
)
from sidecar_integrations.langchain.window import (  # noqa: E402
    DEFAULT_WINDOW_MESSAGES,
    MessageWindow,
    TokenCounter,
)
from sidecar_memory import Recall, SidecarConfig  # noqa: E402
from sidecar_memory.stores import StateStore  # noqa: E402

logger = logging.getLogger(__name__)

MEMORY_MESSAGE_NAME = "sidecar_memory"
"""``name`` of the system message that carries the steering prefix and recalled memories."""

DEFAULT_TOKENS_PER_MESSAGE = 5
"""Chat-template tokens counted per message on top of its text (ChatML adds about five)."""


class SidecarChatMessageHistory(BaseChatMessageHistory):
    """Chat history that commits each turn to a sidecar memory and returns a bounded prompt.

    ``add_messages`` runs gate-and-commit on every human and AI message with text,
    then appends the messages (system messages excepted) to a recent-message
    window. ``messages`` returns one system message with the steering prefix and
    the memories recalled for the latest human message in the window, followed by
    that window. The system message is left out when the recall is empty.

    Both the engine state and the window are saved in ``store``: the engine state
    under ``session_id`` and the window under a derived id (see
    :func:`~sidecar_integrations.langchain.window.window_session_id`). Two
    histories with different session ids on one store never see each other's
    messages or memories.

    Args:
        session_id: Id of the conversation in the store.
        model: Hugging Face causal LM used by the engine (from ``load_default_model()``).
        tokenizer: The model's tokenizer.
        store: Where state and window are saved; default: a ``DirectoryStore`` under
            ``.sidecar-memory/langchain`` in the working directory.
        config: Engine configuration; ``None`` uses the engine defaults.
        window_messages: Maximum number of recent messages returned; ``None`` for no count limit.
        window_tokens: Maximum tokens of the recent messages; ``None`` for no token limit.
        token_counter: Counts the tokens of a list of messages for ``window_tokens``.
            Default: the tokenizer's token count of each message's text plus
            :data:`DEFAULT_TOKENS_PER_MESSAGE`.
        recall_k: Number of memories recalled for the system message.
    """

    def __init__(
        self,
        session_id: str,
        *,
        model: Any,
        tokenizer: Any,
        store: StateStore | None = None,
        config: SidecarConfig | None = None,
        window_messages: int | None = DEFAULT_WINDOW_MESSAGES,
        window_tokens: int | None = None,
        token_counter: TokenCounter | None = None,
        recall_k: int = DEFAULT_RECALL_K,
    ) -> None:
        super().__init__()
        if recall_k < 1:
            raise ValueError(f"recall_k must be at least 1, got {recall_k}")
        self.session_id = session_id
        self.store = store if store is not None else default_store()
        self.recall_k = recall_k
        if window_tokens is not None and token_counter is None:
            token_counter = _tokenizer_counter(tokenizer)
        self.window = MessageWindow(
            self.store,
            session_id,
            max_messages=window_messages,
            max_tokens=window_tokens,
            token_counter=token_counter,
        )
        self.memory = open_session(model, tokenizer, self.store, session_id, config)

    # -- reading --------------------------------------------------------------

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """The memory system message (when not empty) followed by the recent-message window."""
        window = self.window.load()
        query = _latest_human_text(window)
        recall = self.memory.recall(query, k=self.recall_k) if query else None
        return _assemble(recall, window)

    async def aget_messages(self) -> list[BaseMessage]:
        """Async `messages`: reads the window and recalls through the async store and engine paths."""
        window = await self.window.aload()
        query = _latest_human_text(window)
        recall = await self.memory.arecall(query, k=self.recall_k) if query else None
        return _assemble(recall, window)

    def messages_for(self, query: str) -> list[BaseMessage]:
        """Return what `messages` returns, but with memories recalled for ``query``.

        Use it when the chain has the new human input before the model call,
        so that recall matches the current question instead of the previous one.
        """
        return _assemble(self.memory.recall(query, k=self.recall_k), self.window.load())

    async def amessages_for(self, query: str) -> list[BaseMessage]:
        """Async `messages_for`."""
        recall = await self.memory.arecall(query, k=self.recall_k)
        return _assemble(recall, await self.window.aload())

    # -- writing --------------------------------------------------------------

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Run gate-and-commit on each human and AI message, then append them to the window."""
        for role, text in _turns(messages):
            decision = self.memory.observe(text, role=role)
            logger.debug("session %s: %s turn committed=%s (%s)", self.session_id, role, decision.committed, decision.reason)
        window_messages = _window_messages(messages)
        if window_messages:
            self.window.extend(window_messages)

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Async `add_messages` through the engine's ``aobserve`` and the store's async methods."""
        for role, text in _turns(messages):
            decision = await self.memory.aobserve(text, role=role)
            logger.debug("session %s: %s turn committed=%s (%s)", self.session_id, role, decision.committed, decision.reason)
        window_messages = _window_messages(messages)
        if window_messages:
            await self.window.aextend(window_messages)

    def clear(self) -> None:
        """Delete the session's memory state and its recent-message window."""
        self.memory.clear()
        self.window.clear()

    async def aclear(self) -> None:
        """Async `clear`."""
        await self.memory.aclear()
        await self.window.aclear()


def _latest_human_text(messages: Sequence[BaseMessage]) -> str:
    for message in reversed(messages):
        if isinstance(message, HumanMessage) and message.text.strip():
            return message.text
    return ""


def _turns(messages: Sequence[BaseMessage]) -> list[tuple[str, str]]:
    """Return ``(role, text)`` for each human and AI message that has text."""
    turns = []
    for message in messages:
        if isinstance(message, HumanMessage):
            role = USER_ROLE
        elif isinstance(message, AIMessage):
            role = ASSISTANT_ROLE
        else:
            continue
        text = message.text.strip()
        if text:
            turns.append((role, text))
    return turns


def _window_messages(messages: Sequence[BaseMessage]) -> list[BaseMessage]:
    # System messages are instructions, not turns; the memory message is rebuilt on every read.
    return [message for message in messages if not isinstance(message, SystemMessage)]


def _assemble(recall: Recall | None, window: list[BaseMessage]) -> list[BaseMessage]:
    text = render_memory_text(recall)
    if not text:
        return list(window)
    return [SystemMessage(content=text, name=MEMORY_MESSAGE_NAME), *window]


def _tokenizer_counter(tokenizer: Any) -> TokenCounter:
    def count(messages: Sequence[BaseMessage]) -> int:
        total = 0
        for message in messages:
            total += len(tokenizer.encode(message.text, add_special_tokens=False)) + DEFAULT_TOKENS_PER_MESSAGE
        return total

    return count
