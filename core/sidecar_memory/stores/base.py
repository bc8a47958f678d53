"""The `StateStore` interface, its errors, id validation and the stored-state format.

A store keeps versioned state blobs per ``(namespace, session_id)``. Every save is a
compare-and-set on an integer version: the caller passes the version it loaded
(0 when nothing is stored yet), and the store rejects the write with
`VersionConflictError` when another writer got there first. `StateStore.update`
wraps that loop (load, apply, save, retry with jittered backoff), so a change is never
lost to a concurrent writer.

Each saved version is stored with a manifest that lists, per file, its size and
sha256. Loading verifies every file against the manifest and raises
`CorruptStateError` on a mismatch. Stores keep the version before the current one
as a backup, readable with `StateStore.load_previous`.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import json
import logging
import random
import re
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..errors import InvalidInputError, StateError

logger = logging.getLogger(__name__)

# Version of the manifest layout written by the stores (not the engine's state schema,
# which the engine writes into state.json inside the blob).
MANIFEST_FORMAT = 1

SESSION_ID_MAX_LENGTH = 128
SESSION_ID_PATTERN = re.compile(r"[A-Za-z0-9._:@-]+")
SESSION_ID_RULE = (
    f"1 to {SESSION_ID_MAX_LENGTH} characters from A-Z a-z 0-9 . _ : @ -, and not '.' or '..'"
)

# Namespaces have no ':' or '@' so that key prefixes such as "sidecar:<namespace>:" stay
# unambiguous in key-value stores.
NAMESPACE_MAX_LENGTH = 64
NAMESPACE_PATTERN = re.compile(r"[A-Za-z0-9._-]+")
NAMESPACE_RULE = (
    f"1 to {NAMESPACE_MAX_LENGTH} characters from A-Z a-z 0-9 . _ -, and not '.' or '..'"
)

# Blob file names become file names in DirectoryStore, so they must be plain names.
# A leading '.' is reserved for the store's own files (such as ".manifest.json").
FILE_NAME_MAX_LENGTH = 128
FILE_NAME_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
FILE_NAME_RULE = (
    f"1 to {FILE_NAME_MAX_LENGTH} characters from A-Z a-z 0-9 . _ -, not starting with '.'"
)


class InvalidSessionIdError(InvalidInputError):
    """A session id, namespace or blob file name breaks the naming rule."""


class VersionConflictError(StateError):
    """A compare-and-set save found a different version than the caller expected."""

    def __init__(self, session_id: str, expected_version: int, actual_version: int, *, where: str = ""):
        self.session_id = session_id
        self.expected_version = expected_version
        self.actual_version = actual_version
        location = f" in {where}" if where else ""
        super().__init__(
            f"version conflict for session {session_id!r}{location}: expected version "
            f"{expected_version}, found {actual_version}. Another writer saved first; "
            f"load the latest state, re-apply the change and save again "
            f"(StateStore.update does this)."
        )


class CorruptStateError(StateError):
    """A stored state failed its checksum or could not be parsed.

    ``location`` names the file or key, and ``version`` is the stored version number
    (None when it could not be read). The previous version stays readable with
    `StateStore.load_previous`.
    """

    def __init__(self, location: str, detail: str, *, version: int | None = None):
        self.location = location
        self.detail = detail
        self.version = version
        version_text = f" (version {version})" if version is not None else ""
        super().__init__(
            f"corrupt state at {location}{version_text}: {detail}. "
            f"The previous version is still readable with load_previous(); to restore it, "
            f"save its blob with expected_version set to this version."
        )


class StoreConnectionError(StateError):
    """The store's server or file could not be reached."""


class UpdateRetriesExhaustedError(StateError):
    """`StateStore.update` lost the compare-and-set race more times than allowed."""


# SQL stores add "_versions" to the table name for their second table, and PostgreSQL
# truncates identifiers at 63 bytes.
SQL_IDENTIFIER_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,53}")


def validate_table_name(table: object) -> str:
    """Return ``table`` unchanged if it is a plain SQL identifier, else raise ValueError."""
    if not isinstance(table, str) or SQL_IDENTIFIER_PATTERN.fullmatch(table) is None:
        raise ValueError(
            f"invalid table name {table!r}: use 1 to 54 characters from A-Z a-z 0-9 _, not starting with a digit"
        )
    return table


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by '***', for messages and logs."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


class LoopLocal:
    """Holds one value per running asyncio event loop (async clients cannot cross loops)."""

    def __init__(self) -> None:
        self._values: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    def get(self) -> Any:
        return self._values.get(asyncio.get_running_loop())

    def set(self, value: Any) -> None:
        self._values[asyncio.get_running_loop()] = value

    def pop(self) -> Any:
        return self._values.pop(asyncio.get_running_loop(), None)


def validate_session_id(session_id: object) -> str:
    """Return ``session_id`` unchanged if it is a valid session id, else raise.

    Raises:
        InvalidSessionIdError: shows ``repr(session_id)`` and the rule.
    """
    return _validate_name(session_id, "session id", SESSION_ID_PATTERN, SESSION_ID_MAX_LENGTH, SESSION_ID_RULE)


def validate_namespace(namespace: object) -> str:
    """Return ``namespace`` unchanged if it is a valid namespace, else raise `InvalidSessionIdError`."""
    return _validate_name(namespace, "namespace", NAMESPACE_PATTERN, NAMESPACE_MAX_LENGTH, NAMESPACE_RULE)


def validate_file_name(name: object) -> str:
    """Return ``name`` unchanged if it is a valid blob file name, else raise `InvalidSessionIdError`."""
    return _validate_name(name, "blob file name", FILE_NAME_PATTERN, FILE_NAME_MAX_LENGTH, FILE_NAME_RULE)


def _validate_name(value: object, kind: str, pattern: re.Pattern[str], max_length: int, rule: str) -> str:
    if not isinstance(value, str):
        raise InvalidSessionIdError(
            f"invalid {kind} {value!r}: expected a str, got {type(value).__name__}. Allowed: {rule}."
        )
    if (
        not 1 <= len(value) <= max_length
        or value in (".", "..")
        or pattern.fullmatch(value) is None
    ):
        raise InvalidSessionIdError(f"invalid {kind} {value!r}. Allowed: {rule}.")
    return value


@dataclass(frozen=True)
class StateBlob:
    """The files of one saved state, by file name (for example state.json and state.safetensors).

    The mapping is copied into a read-only mapping on creation. Names must be plain file
    names (see `validate_file_name`) and values must be bytes.
    """

    files: Mapping[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.files, Mapping):
            raise TypeError(f"StateBlob.files must be a mapping of file name to bytes, got {type(self.files).__name__}")
        copied: dict[str, bytes] = {}
        for name, data in self.files.items():
            validate_file_name(name)
            if isinstance(data, (bytearray, memoryview)):
                data = bytes(data)
            if not isinstance(data, bytes):
                raise TypeError(f"StateBlob file {name!r} must be bytes, got {type(data).__name__}")
            copied[name] = data
        object.__setattr__(self, "files", MappingProxyType(copied))

    @property
    def nbytes(self) -> int:
        """Total size of all files in bytes."""
        return sum(len(data) for data in self.files.values())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StateBlob):
            return NotImplemented
        return dict(self.files) == dict(other.files)

    def __hash__(self) -> int:
        return hash(tuple(sorted((name, hashlib.sha256(data).digest()) for name, data in self.files.items())))

    def __repr__(self) -> str:
        sizes = ", ".join(f"{name!r}: {len(data)} bytes" for name, data in sorted(self.files.items()))
        return f"StateBlob({{{sizes}}})"


@dataclass(frozen=True)
class StoredState:
    """A blob as stored, with its version (1 for the first save, +1 per save)."""

    blob: StateBlob
    version: int


# ---------------------------------------------------------------------------
# Manifest and packed payload, shared by every backend.
# ---------------------------------------------------------------------------


def build_manifest(blob: StateBlob) -> dict[str, Any]:
    """Return the manifest for ``blob``: the format number and each file's name, size and sha256.

    Files are listed in sorted name order, which is also their order in `pack_payload`.
    """
    return {
        "format": MANIFEST_FORMAT,
        "files": [
            {"name": name, "size": len(blob.files[name]), "sha256": hashlib.sha256(blob.files[name]).hexdigest()}
            for name in sorted(blob.files)
        ],
    }


def encode_manifest(manifest: Mapping[str, Any]) -> bytes:
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode("utf-8")


def pack_payload(blob: StateBlob) -> bytes:
    """Concatenate the blob's files in sorted name order (the manifest gives the sizes)."""
    return b"".join(blob.files[name] for name in sorted(blob.files))


def decode_manifest(raw: bytes | str, location: str, version: int | None = None) -> list[dict[str, Any]]:
    """Parse and check a manifest; return its file entries.

    Raises:
        CorruptStateError: the manifest is not valid JSON or lacks required fields.
        StateError: the manifest format is newer than this version of sidecar-memory reads.
    """
    try:
        manifest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CorruptStateError(location, f"manifest is not valid JSON ({error})", version=version) from error
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise CorruptStateError(location, "manifest lacks a 'files' list", version=version)
    manifest_format = manifest.get("format")
    if not isinstance(manifest_format, int):
        raise CorruptStateError(location, "manifest lacks an integer 'format'", version=version)
    if manifest_format > MANIFEST_FORMAT:
        raise StateError(
            f"state at {location} uses store manifest format {manifest_format}, but this version of "
            f"sidecar-memory reads format {MANIFEST_FORMAT} or older; upgrade sidecar-memory to load it."
        )
    entries = []
    for entry in manifest["files"]:
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("name"), str)
            or not isinstance(entry.get("size"), int)
            or not isinstance(entry.get("sha256"), str)
        ):
            raise CorruptStateError(location, f"manifest entry {entry!r} lacks name, size or sha256", version=version)
        try:
            validate_file_name(entry["name"])
        except InvalidSessionIdError as error:
            raise CorruptStateError(location, f"manifest lists an invalid file name ({error})", version=version) from error
        entries.append(entry)
    return entries


def verify_file(location: str, entry: Mapping[str, Any], data: bytes, version: int | None = None) -> None:
    """Raise `CorruptStateError` unless ``data`` matches the manifest entry's size and sha256."""
    if len(data) != entry["size"]:
        raise CorruptStateError(
            location,
            f"file {entry['name']!r} has {len(data)} bytes, manifest says {entry['size']}",
            version=version,
        )
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry["sha256"]:
        raise CorruptStateError(
            location,
            f"file {entry['name']!r} fails its sha256 check (stored {entry['sha256']}, computed {digest})",
            version=version,
        )


def unpack_payload(manifest_raw: bytes | str, payload: bytes, location: str, version: int | None = None) -> StateBlob:
    """Split a packed payload back into files and verify each one against the manifest."""
    entries = decode_manifest(manifest_raw, location, version)
    payload = bytes(payload)
    expected_size = sum(entry["size"] for entry in entries)
    if len(payload) != expected_size:
        raise CorruptStateError(
            location, f"payload has {len(payload)} bytes, manifest lists {expected_size}", version=version
        )
    files: dict[str, bytes] = {}
    offset = 0
    for entry in entries:
        data = payload[offset : offset + entry["size"]]
        offset += entry["size"]
        verify_file(location, entry, data, version)
        files[entry["name"]] = data
    return StateBlob(files)


# ---------------------------------------------------------------------------
# The interface.
# ---------------------------------------------------------------------------

ApplyFunction = Callable[[StoredState | None], StateBlob]
AsyncApplyFunction = Callable[[StoredState | None], Awaitable[StateBlob]]


@dataclass(frozen=True)
class RetryPolicy:
    """Retry settings for `StateStore.update`.

    The delay before retry ``n`` (1-based) is drawn uniformly from
    ``[0, min(max_delay, base_delay * 2 ** (n - 1))]`` ("full jitter"), in seconds.
    """

    max_attempts: int = 20
    base_delay: float = 0.005
    max_delay: float = 0.5

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError(f"delays must be >= 0 seconds, got base_delay={self.base_delay}, max_delay={self.max_delay}")

    def delay(self, retry: int) -> float:
        return random.uniform(0.0, min(self.max_delay, self.base_delay * 2 ** (retry - 1)))


class StateStore(abc.ABC):
    """Versioned state blobs keyed by ``(namespace, session_id)``.

    Public methods validate the session id and then call the backend's ``_load``,
    ``_load_previous``, ``_save``, ``_delete`` and ``_list`` hooks. The async methods
    default to running the sync ones in a worker thread; backends with a native async
    client override the ``_a*`` hooks.

    Concurrency is optimistic: `save` succeeds only if the stored version equals
    ``expected_version``, and otherwise raises `VersionConflictError` without writing.
    """

    namespace: str

    def __init__(self, *, namespace: str = "default"):
        self.namespace = validate_namespace(namespace)

    # -- public API ---------------------------------------------------------

    def load(self, session_id: str) -> StoredState | None:
        """Return the current state of ``session_id``, or None if nothing is stored.

        Raises:
            CorruptStateError: the current version fails its checksum; `load_previous` still works.
        """
        return self._load(validate_session_id(session_id))

    def load_previous(self, session_id: str) -> StoredState | None:
        """Return the version saved before the current one, or None if there is none."""
        return self._load_previous(validate_session_id(session_id))

    def save(self, session_id: str, blob: StateBlob, *, expected_version: int) -> int:
        """Store ``blob`` as the next version if the current version equals ``expected_version``.

        ``expected_version`` is 0 when the session must not exist yet. Returns the new
        version. The version before the new one is kept as the backup; older ones are removed.

        Raises:
            VersionConflictError: the stored version differs; nothing was written.
        """
        self._check_save_arguments(blob, expected_version)
        return self._save(validate_session_id(session_id), blob, expected_version)

    def delete(self, session_id: str) -> bool:
        """Remove everything stored for ``session_id``, backups included. Return whether anything existed."""
        return self._delete(validate_session_id(session_id))

    def list_sessions(self) -> list[str]:
        """Return the sorted ids of the sessions stored in this namespace."""
        return sorted(self._list())

    def update(
        self,
        session_id: str,
        apply: ApplyFunction,
        *,
        retry: RetryPolicy | None = None,
    ) -> int:
        """Load, apply a change and save, retrying on version conflicts; return the new version.

        ``apply`` receives the current `StoredState` (None when nothing is stored) and
        returns the new blob. It runs again from scratch on every retry, so it must not
        have side effects that survive a discarded attempt.

        Raises:
            UpdateRetriesExhaustedError: every attempt lost the race to another writer.
        """
        validate_session_id(session_id)
        policy = retry or RetryPolicy()
        for attempt in range(1, policy.max_attempts + 1):
            current = self.load(session_id)
            blob = apply(current)
            try:
                return self.save(session_id, blob, expected_version=current.version if current else 0)
            except VersionConflictError as conflict:
                if attempt == policy.max_attempts:
                    raise self._retries_exhausted(session_id, policy, conflict) from conflict
                delay = policy.delay(attempt)
                logger.debug(
                    "version conflict on %s/%s (attempt %d of %d), retrying in %.3f s",
                    self.namespace, session_id, attempt, policy.max_attempts, delay,
                )
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def aload(self, session_id: str) -> StoredState | None:
        return await self._aload(validate_session_id(session_id))

    async def aload_previous(self, session_id: str) -> StoredState | None:
        return await self._aload_previous(validate_session_id(session_id))

    async def asave(self, session_id: str, blob: StateBlob, *, expected_version: int) -> int:
        self._check_save_arguments(blob, expected_version)
        return await self._asave(validate_session_id(session_id), blob, expected_version)

    async def adelete(self, session_id: str) -> bool:
        return await self._adelete(validate_session_id(session_id))

    async def alist_sessions(self) -> list[str]:
        return sorted(await self._alist())

    async def aupdate(
        self,
        session_id: str,
        apply: AsyncApplyFunction,
        *,
        retry: RetryPolicy | None = None,
    ) -> int:
        """Async `update`: ``apply`` is a coroutine function with the same contract."""
        validate_session_id(session_id)
        policy = retry or RetryPolicy()
        for attempt in range(1, policy.max_attempts + 1):
            current = await self.aload(session_id)
            blob = await apply(current)
            try:
                return await self.asave(session_id, blob, expected_version=current.version if current else 0)
            except VersionConflictError as conflict:
                if attempt == policy.max_attempts:
                    raise self._retries_exhausted(session_id, policy, conflict) from conflict
                delay = policy.delay(attempt)
                logger.debug(
                    "version conflict on %s/%s (attempt %d of %d), retrying in %.3f s",
                    self.namespace, session_id, attempt, policy.max_attempts, delay,
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Release connections or handles. The default does nothing."""

    async def aclose(self) -> None:
        """Release async connections, then the sync ones."""
        self.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- backend hooks ------------------------------------------------------

    @abc.abstractmethod
    def _load(self, session_id: str) -> StoredState | None: ...

    @abc.abstractmethod
    def _load_previous(self, session_id: str) -> StoredState | None: ...

    @abc.abstractmethod
    def _save(self, session_id: str, blob: StateBlob, expected_version: int) -> int: ...

    @abc.abstractmethod
    def _delete(self, session_id: str) -> bool: ...

    @abc.abstractmethod
    def _list(self) -> list[str]: ...

    async def _aload(self, session_id: str) -> StoredState | None:
        return await asyncio.to_thread(self._load, session_id)

    async def _aload_previous(self, session_id: str) -> StoredState | None:
        return await asyncio.to_thread(self._load_previous, session_id)

    async def _asave(self, session_id: str, blob: StateBlob, expected_version: int) -> int:
        return await asyncio.to_thread(self._save, session_id, blob, expected_version)

    async def _adelete(self, session_id: str) -> bool:
        return await asyncio.to_thread(self._delete, session_id)

    async def _alist(self) -> list[str]:
        return await asyncio.to_thread(self._list)

    # -- helpers ------------------------------------------------------------

    @staticmethod
    def _check_save_arguments(blob: object, expected_version: object) -> None:
        if not isinstance(blob, StateBlob):
            raise TypeError(f"blob must be a StateBlob, got {type(blob).__name__}")
        if isinstance(expected_version, bool) or not isinstance(expected_version, int) or expected_version < 0:
            raise ValueError(
                f"expected_version must be an int >= 0 (0 when the session must not exist yet), "
                f"got {expected_version!r}"
            )

    def _retries_exhausted(
        self, session_id: str, policy: RetryPolicy, conflict: VersionConflictError
    ) -> UpdateRetriesExhaustedError:
        logger.warning(
            "giving up on %s/%s after %d version conflicts", self.namespace, session_id, policy.max_attempts
        )
        return UpdateRetriesExhaustedError(
            f"could not save session {session_id!r} in namespace {self.namespace!r}: "
            f"{policy.max_attempts} attempts in a row lost to concurrent writers (last: {conflict}). "
            f"Raise RetryPolicy.max_attempts or reduce the number of writers per session."
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(namespace={self.namespace!r})"
