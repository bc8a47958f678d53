"""Pieces shared by the LangChain adapters: engine sessions, roles and the memory text.

Everything here goes through the engine's public API (``SessionMemory``,
``StateStore``, ``Recall``), never through engine internals.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from sidecar_memory import Recall, SessionMemory, SidecarConfig
from sidecar_memory.stores import DirectoryStore, StateStore

logger = logging.getLogger(__name__)

DEFAULT_STATE_DIRECTORY = Path(".sidecar-memory") / "langchain"
"""Directory of the `DirectoryStore` an adapter creates when it is given no store (relative to the working directory)."""

DEFAULT_RECALL_K = 5
"""Number of memories recalled per turn."""

DEFAULT_SESSION_CACHE_SIZE = 128
"""Number of per-session engine handles an adapter keeps before closing the least recently used."""

USER_ROLE = "user"
ASSISTANT_ROLE = "assistant"

MEMORY_HEADER = "Memory from earlier turns:"
"""First line of the system text that carries the steering prefix and the recalled memories."""


def default_store() -> StateStore:
    """Return a `DirectoryStore` under :data:`DEFAULT_STATE_DIRECTORY` (created on the first save)."""
    return DirectoryStore(DEFAULT_STATE_DIRECTORY)


def render_memory_text(recall: Recall | None) -> str:
    """Return the system text for ``recall``: a header, the steering prefix and one line per memory.

    A memory whose slot also contains nearby turns (bound by eligibility traces)
    shows them after it as ``(context: ...)``. Returns an empty string when the
    recall has neither a prefix nor memories.
    """
    if recall is None:
        return ""
    lines = [recall.prefix.strip()] if recall.prefix.strip() else []
    for item in recall.memories:
        context = item.context.strip()
        lines.append(f"- {item.text} (context: {context})" if context else f"- {item.text}")
    if not lines:
        return ""
    return "\n".join([MEMORY_HEADER, *lines])


def open_session(
    model: Any,
    tokenizer: Any,
    store: StateStore,
    session_id: str,
    config: SidecarConfig | None,
) -> SessionMemory:
    """Create the engine handle that persists ``session_id`` in ``store``."""
    return SessionMemory(model, tokenizer, store, session_id, config=config)


class SessionCache:
    """Bounded, thread-safe map from session id to `SessionMemory`.

    Every `SessionMemory` call reloads the latest state from the store, so
    dropping a handle loses nothing. The cache only saves rebuilding it.
    """

    def __init__(
        self,
        *,
        model: Any,
        tokenizer: Any,
        store: StateStore,
        config: SidecarConfig | None,
        max_sessions: int = DEFAULT_SESSION_CACHE_SIZE,
    ) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be at least 1, got {max_sessions}")
        self.model = model
        self.tokenizer = tokenizer
        self.store = store
        self.config = config
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, SessionMemory] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session_id: str) -> SessionMemory:
        """Return the handle for ``session_id``, creating it on first use."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None:
                self._sessions.move_to_end(session_id)
                return session
        session = open_session(self.model, self.tokenizer, self.store, session_id, self.config)
        with self._lock:
            self._sessions[session_id] = session
            self._sessions.move_to_end(session_id)
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        return session
