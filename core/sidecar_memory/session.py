"""`SessionMemory`: one user's or session's memory, persisted in a `StateStore` after every change.

Every change (observe, forget, reward, a generate that observes its prompt) loads the
latest stored version, applies the change to a `Sidecar` and saves it with a
compare-and-set on the version. When another process saved first, the store raises
`VersionConflictError`, and the change is applied again to the newer state after a
jittered backoff (see `RetryPolicy`). So concurrent workers serving the same session
never overwrite each other's commits. A change that loses the race more than
``RetryPolicy.max_attempts`` times raises `UpdateRetriesExhaustedError` and stores nothing.

Reads (recall, stats, slots) load the latest version and change nothing in the store.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import StateError
from .stores.base import (
    CorruptStateError,
    RetryPolicy,
    StateBlob,
    StateStore,
    StoredState,
    validate_session_id,
)

if TYPE_CHECKING:
    from .config import SidecarConfig
    from .records import GateDecision, MemoryItem, Recall
    from .sidecar import Sidecar

logger = logging.getLogger(__name__)

Result = TypeVar("Result")


class SessionMemory:
    """A `Sidecar` whose state lives in ``store`` under ``session_id``.

    Create one per session and request, or keep one per session for the life of a worker.
    It keeps no state that the store does not have. The only exception is a parsed copy of
    the last version it read, which it reuses only while the stored bytes are unchanged.
    Methods are thread-safe. The async variants run model work in a worker thread and
    use the store's async methods.

    Args:
        model: a Hugging Face causal LM, shared read-only by every session.
        tokenizer: its tokenizer.
        store: where states are kept (`DirectoryStore`, `SQLiteStore`, `RedisStore`, `PostgresStore`).
        session_id: the user or session key; see `validate_session_id` for the rule.
        config: sizes and gains for new sessions. A stored state keeps the config it was created with.
        retry: retry settings for version conflicts; the default is `RetryPolicy()`.
        **overrides: fields to change on ``config``, e.g. ``rank=128``.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        store: StateStore,
        session_id: str,
        *,
        config: SidecarConfig | None = None,
        retry: RetryPolicy | None = None,
        **overrides: Any,
    ):
        if not isinstance(store, StateStore):
            raise TypeError(f"store must be a StateStore such as DirectoryStore, got {type(store).__name__}")
        self.model = model
        self.tokenizer = tokenizer
        self.store = store
        self.session_id = validate_session_id(session_id)
        self.config = config
        self.overrides = overrides
        self.retry = retry or RetryPolicy()
        self._lock = threading.RLock()
        self._sidecar: Sidecar | None = None
        # The blob that self._sidecar's state currently equals, or None when unknown.
        self._sidecar_blob: StateBlob | None = None
        self._version = 0

    # -- changes --------------------------------------------------------------

    def observe(self, text: str, role: str = "user", *, timestamp: float | None = None) -> GateDecision:
        """Observe one turn and save the result; return the gate decision of the attempt that was saved."""
        return self._update(lambda sidecar: sidecar.observe(text, role, timestamp=timestamp))

    async def aobserve(self, text: str, role: str = "user", *, timestamp: float | None = None) -> GateDecision:
        return await self._aupdate(lambda sidecar: sidecar.observe(text, role, timestamp=timestamp))

    def forget(self, query: str | None = None, all: bool = False, *, threshold: float = 0.5) -> int:  # noqa: A002
        """Clear matching slots (or everything with ``all=True``) and save; return the number cleared.

        ``forget(all=True)`` keeps the session's stored history of versions; use `clear` to
        remove every trace of the session from the store.
        """
        return self._update(lambda sidecar: sidecar.forget(query, all, threshold=threshold))

    async def aforget(self, query: str | None = None, all: bool = False, *, threshold: float = 0.5) -> int:  # noqa: A002
        return await self._aupdate(lambda sidecar: sidecar.forget(query, all, threshold=threshold))

    def reward(self, value: float) -> GateDecision | None:
        """Credit the latest stored turn with ``value`` in [-1, 1] and save; see `Sidecar.reward`."""
        return self._update(lambda sidecar: sidecar.reward(value))

    async def areward(self, value: float) -> GateDecision | None:
        return await self._aupdate(lambda sidecar: sidecar.reward(value))

    def generate(self, prompt: str, max_new_tokens: int = 64, *, observe: bool = True, **kwargs: Any) -> str:
        """Generate a reply to ``prompt`` with recalled memory; ``observe=True`` also observes and saves the prompt.

        A retried save generates the answer again, so with sampling the returned text is
        the one from the attempt that was saved.
        """
        if observe:
            return self._update(lambda sidecar: sidecar.generate(prompt, max_new_tokens, observe=True, **kwargs))
        return self._read(lambda sidecar: sidecar.generate(prompt, max_new_tokens, observe=False, **kwargs))

    def clear(self) -> bool:
        """Delete everything stored for this session, backups included; return whether anything existed."""
        with self._lock:
            self._sidecar = None
            self._sidecar_blob = None
            self._version = 0
        return self.store.delete(self.session_id)

    async def aclear(self) -> bool:
        with self._lock:
            self._sidecar = None
            self._sidecar_blob = None
            self._version = 0
        return await self.store.adelete(self.session_id)

    def restore_previous(self) -> int:
        """Make the backup (the version before the current one) current again; return the new version.

        Use this when loading fails with `CorruptStateError`, or with `StateError` because
        the current state is invalid. The backup is validated before it is saved.

        Raises:
            StateError: there is no previous version, or it is invalid too.
        """
        previous = self.store.load_previous(self.session_id)
        if previous is None:
            raise StateError(
                f"session {self.session_id!r} in {self.store!r} has no previous version to restore; "
                f"call clear() to start the session again"
            )
        with self._lock:
            sidecar = self._new_sidecar()
            sidecar.load_blob(previous.blob, where=self._where(previous.version) + " (previous version)")
        try:
            current = self.store.load(self.session_id)
            expected_version = current.version if current else 0
        except CorruptStateError as error:
            if error.version is None:
                raise
            expected_version = error.version
        version = self.store.save(self.session_id, previous.blob, expected_version=expected_version)
        logger.warning(
            "restored session %s from version %d as version %d", self.session_id, previous.version, version
        )
        return version

    # -- reads ----------------------------------------------------------------

    def recall(self, query: str, k: int | None = None) -> Recall:
        """Return the memories most relevant to ``query`` from the latest stored state."""
        return self._read(lambda sidecar: sidecar.recall(query, k))

    async def arecall(self, query: str, k: int | None = None) -> Recall:
        return await self._aread(lambda sidecar: sidecar.recall(query, k))

    @property
    def stats(self) -> dict[str, Any]:
        """`Sidecar.stats` of the latest stored state, plus its ``version`` (0 when nothing is stored)."""
        return self._read(lambda sidecar: {**sidecar.stats, "version": self._version})

    def slots(self) -> list[MemoryItem]:
        """Return the occupied slots of the latest stored state, strongest first."""
        return self._read(lambda sidecar: sidecar.slots())

    def sidecar(self) -> Sidecar:
        """Return a new `Sidecar` holding the latest stored state.

        It is a detached copy: changes made to it are not saved. Use it for read-only
        work such as `Sidecar.generate_kv`.
        """
        current = self.store.load(self.session_id)
        sidecar = self._new_sidecar()
        if current is not None:
            sidecar.load_blob(current.blob, where=self._where(current.version))
        return sidecar

    @property
    def version(self) -> int:
        """The stored version seen by the last call (0 when nothing was stored)."""
        return self._version

    # -- the load, apply, save loop ---------------------------------------------

    def _update(self, change: Callable[[Sidecar], Result]) -> Result:
        outcome: list[Result] = []

        def apply(current: StoredState | None) -> StateBlob:
            outcome.clear()
            with self._lock:
                result, blob = self._apply(current, change)
            outcome.append(result)
            return blob

        version = self.store.update(self.session_id, apply, retry=self.retry)
        self._version = version
        return outcome[0]

    async def _aupdate(self, change: Callable[[Sidecar], Result]) -> Result:
        outcome: list[Result] = []

        async def apply(current: StoredState | None) -> StateBlob:
            outcome.clear()
            result, blob = await asyncio.to_thread(self._apply_locked, current, change)
            outcome.append(result)
            return blob

        version = await self.store.aupdate(self.session_id, apply, retry=self.retry)
        self._version = version
        return outcome[0]

    def _apply_locked(self, current: StoredState | None, change: Callable[[Sidecar], Result]) -> tuple[Result, StateBlob]:
        with self._lock:
            return self._apply(current, change)

    def _apply(self, current: StoredState | None, change: Callable[[Sidecar], Result]) -> tuple[Result, StateBlob]:
        """Run ``change`` on ``current`` and return its result and the new blob (lock held)."""
        sidecar = self._sidecar_at(current)
        self._sidecar_blob = None  # the state is about to change
        result = change(sidecar)
        blob = sidecar.to_blob()
        self._sidecar_blob = blob
        return result, blob

    def _read(self, read: Callable[[Sidecar], Result]) -> Result:
        current = self.store.load(self.session_id)
        with self._lock:
            return read(self._sidecar_at(current))

    async def _aread(self, read: Callable[[Sidecar], Result]) -> Result:
        current = await self.store.aload(self.session_id)

        def run() -> Result:
            with self._lock:
                return read(self._sidecar_at(current))

        return await asyncio.to_thread(run)

    def _sidecar_at(self, current: StoredState | None) -> Sidecar:
        """Return the sidecar holding ``current`` (a fresh memory for None), loading it if needed (lock held)."""
        self._version = current.version if current else 0
        if current is None:
            self._sidecar = self._new_sidecar()
            self._sidecar_blob = None
            return self._sidecar
        if self._sidecar is not None and self._sidecar_blob is not None and self._sidecar_blob == current.blob:
            return self._sidecar
        sidecar = self._sidecar if self._sidecar is not None else self._new_sidecar()
        self._sidecar_blob = None
        sidecar.load_blob(current.blob, where=self._where(current.version))
        self._sidecar = sidecar
        self._sidecar_blob = current.blob
        return sidecar

    def _new_sidecar(self) -> Sidecar:
        from .sidecar import Sidecar

        return Sidecar(self.model, self.tokenizer, self.config, **self.overrides)

    def _where(self, version: int) -> str:
        return f"{self.store!r} session {self.session_id!r} version {version}"

    def __repr__(self) -> str:
        return f"SessionMemory(store={self.store!r}, session_id={self.session_id!r})"
