"""`DirectoryStore`: one directory per session, one subdirectory per saved version.

Layout under ``root``::

    <namespace>/<session_id>/lock                  advisory lock file (flock)
    <namespace>/<session_id>/v000000000007/        current version: the blob's files + .manifest.json
    <namespace>/<session_id>/v000000000006/        previous version (the backup)

A save takes an exclusive lock on ``lock``, checks the expected version against the
highest version directory, writes the new version into a temporary directory, fsyncs
it and renames it to its final name. A process killed mid-save leaves at most a
temporary directory, which loads ignore and the next save removes. Loads take no lock:
a version directory appears complete (by rename) or not at all.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

from .base import (
    CorruptStateError,
    InvalidSessionIdError,
    StateBlob,
    StateError,
    StateStore,
    StoredState,
    VersionConflictError,
    build_manifest,
    decode_manifest,
    encode_manifest,
    validate_session_id,
    verify_file,
)
from .files import fsync_directory, remove_tree, write_directory

logger = logging.getLogger(__name__)

MANIFEST_NAME = ".manifest.json"
LOCK_NAME = "lock"
_VERSION_PATTERN = re.compile(r"v(\d{12})")
_TEMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".trash-"
# Deleted session directories are moved here first. '~' is not allowed in session ids,
# so these names never collide with a session.
_SESSION_TRASH_PREFIX = "~trash-"
# How often a load re-lists versions when a concurrent save removed the one it was reading.
_LOAD_ATTEMPTS = 20

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt


class DirectoryStore(StateStore):
    """Sessions as directories under ``root/<namespace>/``; the default store.

    Several processes on one machine may share a root: saves are serialized per session
    by an advisory file lock (``fcntl.flock``). NOTE: flock is not reliable on every
    network file system, so share a root over NFS or SMB only if it supports flock.
    NOTE: ':' is not allowed in Windows file names, so on Windows avoid ':' in session ids.
    """

    def __init__(self, root: str | os.PathLike[str], *, namespace: str = "default"):
        super().__init__(namespace=namespace)
        self.root = Path(root)
        self.namespace_dir = self.root / self.namespace

    def session_dir(self, session_id: str) -> Path:
        """Return the directory that contains every stored version of ``session_id``."""
        return self.namespace_dir / validate_session_id(session_id)

    # -- hooks --------------------------------------------------------------

    def _load(self, session_id: str) -> StoredState | None:
        return self._load_nth_latest(session_id, 1)

    def _load_previous(self, session_id: str) -> StoredState | None:
        return self._load_nth_latest(session_id, 2)

    def _save(self, session_id: str, blob: StateBlob, expected_version: int) -> int:
        session_dir = self.session_dir(session_id)
        with self._locked(session_dir):
            versions = _list_versions(session_dir)
            current = versions[-1] if versions else 0
            if current != expected_version:
                raise VersionConflictError(session_id, expected_version, current, where=str(session_dir))
            _remove_leftovers(session_dir)

            new_version = current + 1
            files = dict(blob.files)
            files[MANIFEST_NAME] = encode_manifest(build_manifest(blob))
            temporary = session_dir / f"{_TEMP_PREFIX}{uuid.uuid4().hex}"
            try:
                write_directory(temporary, files)
            except BaseException:
                remove_tree(temporary)
                raise
            os.rename(temporary, session_dir / _version_name(new_version))
            fsync_directory(session_dir)

            # Keep the new version and the one before it. Older ones are renamed away before
            # removal, so a crash during removal never leaves a half-removed version.
            for old_version in versions[:-1]:
                trash = session_dir / f"{_TRASH_PREFIX}{uuid.uuid4().hex}"
                os.rename(session_dir / _version_name(old_version), trash)
                remove_tree(trash)
            return new_version

    def _delete(self, session_id: str) -> bool:
        session_dir = self.session_dir(session_id)
        if not session_dir.exists():
            return False
        with self._locked(session_dir):
            existed = bool(_list_versions(session_dir))
            trash = self.namespace_dir / f"{_SESSION_TRASH_PREFIX}{uuid.uuid4().hex}"
            os.rename(session_dir, trash)
            fsync_directory(self.namespace_dir)
        remove_tree(trash)
        return existed

    def _list(self) -> list[str]:
        if not self.namespace_dir.is_dir():
            return []
        sessions = []
        for entry in self.namespace_dir.iterdir():
            try:
                validate_session_id(entry.name)
            except InvalidSessionIdError:
                continue  # a trash directory
            if entry.is_dir() and _list_versions(entry):
                sessions.append(entry.name)
        return sessions

    # -- helpers ------------------------------------------------------------

    def _load_nth_latest(self, session_id: str, n: int) -> StoredState | None:
        session_dir = self.session_dir(session_id)
        for _ in range(_LOAD_ATTEMPTS):
            versions = _list_versions(session_dir)
            if len(versions) < n:
                return None
            version = versions[-n]
            try:
                return _read_version(session_dir, version)
            except FileNotFoundError as error:
                if version in _list_versions(session_dir):
                    raise CorruptStateError(
                        str(session_dir / _version_name(version)),
                        f"missing file {Path(error.filename or '?').name!r}",
                        version=version,
                    ) from error
                logger.debug("version %d of %s was removed during a load; listing again", version, session_dir)
        raise StateError(
            f"could not load {session_dir}: it changed on every one of {_LOAD_ATTEMPTS} attempts. "
            f"Too many concurrent saves to one session; retry later."
        )

    @contextlib.contextmanager
    def _locked(self, session_dir: Path) -> Iterator[None]:
        """Hold the session's exclusive lock, creating the session directory if needed."""
        lock_path = session_dir / LOCK_NAME
        while True:
            session_dir.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:
                continue  # a concurrent delete moved the directory away; create it again
            try:
                _lock_file(fd)
                # A concurrent delete may have moved the directory while we waited, leaving
                # us holding the lock of a file that is no longer at lock_path.
                try:
                    same_file = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same_file = False
                if not same_file:
                    continue
                yield
                return
            finally:
                os.close(fd)  # closing the descriptor releases the lock


def _version_name(version: int) -> str:
    return f"v{version:012d}"


def _list_versions(session_dir: Path) -> list[int]:
    try:
        names = os.listdir(session_dir)
    except FileNotFoundError:
        return []
    versions = []
    for name in names:
        match = _VERSION_PATTERN.fullmatch(name)
        if match:
            versions.append(int(match.group(1)))
    return sorted(versions)


def _read_version(session_dir: Path, version: int) -> StoredState:
    version_dir = session_dir / _version_name(version)
    manifest_path = version_dir / MANIFEST_NAME
    entries = decode_manifest(manifest_path.read_bytes(), str(manifest_path), version)
    files = {}
    for entry in entries:
        path = version_dir / entry["name"]
        data = path.read_bytes()
        verify_file(str(path), entry, data, version)
        files[entry["name"]] = data
    return StoredState(StateBlob(files), version)


def _remove_leftovers(session_dir: Path) -> None:
    """Remove temporary and trash directories left by processes killed mid-save (lock held)."""
    for name in os.listdir(session_dir):
        if name.startswith((_TEMP_PREFIX, _TRASH_PREFIX)):
            logger.info("removing %s left by an interrupted save", session_dir / name)
            remove_tree(session_dir / name)


def _lock_file(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX)
    else:  # pragma: no cover - Windows
        msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
