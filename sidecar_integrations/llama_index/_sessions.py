"""Building and checking the per-user memory sessions the adapters read and write.

The adapters use only the engine's public API: ``sidecar_memory.SessionMemory``
(one user's memory, persisted in a state store) and its methods.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

SESSION_METHODS = ("observe", "aobserve", "recall", "arecall")
"""Methods the adapters call on a session object."""


def validate_session(session: Any) -> Any:
    """Return ``session`` if it has every method in :data:`SESSION_METHODS`, else raise ValueError."""
    missing = [name for name in SESSION_METHODS if not callable(getattr(session, name, None))]
    if missing:
        raise ValueError(
            f"session {type(session).__name__} lacks the method(s) {missing}; pass a "
            "sidecar_memory.SessionMemory (or a sidecar_memory.Sidecar for one in-process user)"
        )
    return session


def build_session(*, model: Any, tokenizer: Any, store: Any, session_id: str | None, config: Any) -> Any:
    """Build a ``sidecar_memory.SessionMemory`` for ``session_id`` in ``store``.

    Raises:
        ValueError: ``model``, ``tokenizer``, ``store`` or ``session_id`` is missing.
    """
    missing = [
        name
        for name, value in (
            ("model", model),
            ("tokenizer", tokenizer),
            ("store", store),
            ("session_id", session_id),
        )
        if value is None
    ]
    if missing:
        raise ValueError(
            f"missing {', '.join(missing)}: pass session= (a sidecar_memory.SessionMemory), or "
            "model= and tokenizer= (for example from sidecar_memory.load_default_model()), "
            "store= (for example sidecar_memory.stores.DirectoryStore('sidecar-state') or "
            "sidecar_memory.stores.open_store(url)) and session_id="
        )

    from sidecar_memory import SessionMemory

    return SessionMemory(model, tokenizer, store, session_id, config=config)


def clear_session(session: Any) -> None:
    """Delete every long-term memory of ``session`` (``clear()``, or ``forget(all=True)`` on a ``Sidecar``)."""
    if callable(getattr(session, "clear", None)):
        session.clear()
    else:
        session.forget(all=True)


async def aclear_session(session: Any) -> None:
    """Async :func:`clear_session`; a session without ``aclear`` is cleared in a worker thread."""
    if callable(getattr(session, "aclear", None)):
        await session.aclear()
    else:
        await asyncio.to_thread(clear_session, session)


def hf_token_counter(tokenizer: Any) -> Callable[[str], list]:
    """Return a function from text to the token ids of a Hugging Face ``tokenizer``, without special tokens."""

    def encode(text: str) -> list:
        return tokenizer.encode(text, add_special_tokens=False)

    return encode
