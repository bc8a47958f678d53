"""Crash-safe writing of a directory of files (used by `Sidecar.save_state` and `DirectoryStore`).

`write_files_atomically` writes the new files into a temporary directory next to the
target, fsyncs them, then swaps it in with two renames:

1. ``<target>`` is renamed to ``.<name>.previous`` (if it exists),
2. the temporary directory is renamed to ``<target>``,
3. ``.<name>.previous`` is removed.

A process killed at any point leaves either the old or the new directory complete.
Between steps 1 and 2 only ``.<name>.previous`` exists, and `read_files` reads that
backup when ``<target>`` is missing. Leftover temporary directories are removed by the
next write.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path

from .base import validate_file_name

logger = logging.getLogger(__name__)

_TEMP_MARKER = ".tmp-"
_BACKUP_SUFFIX = ".previous"


def fsync_directory(directory: Path) -> None:
    """Flush a directory entry so that renames inside it survive a power loss (no-op on Windows)."""
    if os.name == "nt":  # NOTE: Windows cannot open a directory for fsync; renames there are not flushed.
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_durably(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file at ``path`` and fsync it."""
    with open(path, "xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def write_directory(directory: Path, files: Mapping[str, bytes]) -> None:
    """Create ``directory`` (which must not exist) with the given files, all fsynced."""
    directory.mkdir()
    for name, data in files.items():
        write_file_durably(directory / name, data)
    fsync_directory(directory)


def remove_tree(path: Path) -> None:
    """Remove a directory tree, logging instead of raising when it is already gone."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        logger.debug("%s was already removed", path)


def backup_path(directory: Path) -> Path:
    """Return where `write_files_atomically` keeps the old directory during the swap."""
    return directory.parent / f".{directory.name}{_BACKUP_SUFFIX}"


def write_files_atomically(directory: str | os.PathLike[str], files: Mapping[str, bytes]) -> None:
    """Replace the contents of ``directory`` with ``files`` so that a crash leaves old or new, never a mix.

    ``files`` maps plain file names to bytes. The parent directory is created if needed.
    Files in an existing ``directory`` that are not in ``files`` do not survive the swap.

    NOTE: one writer per directory at a time. Concurrent writers to the same directory
    can remove each other's temporary directory and fail; share state through a
    `StateStore` instead.
    """
    target = Path(directory)
    for name, data in files.items():
        validate_file_name(name)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"file {name!r} must be bytes, got {type(data).__name__}")
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(target)

    temporary = parent / f".{target.name}{_TEMP_MARKER}{uuid.uuid4().hex}"
    try:
        write_directory(temporary, {name: bytes(data) for name, data in files.items()})
    except BaseException:
        remove_tree(temporary)
        raise

    backup = backup_path(target)
    if target.exists():
        # The target is complete, so a backup left by an earlier interrupted write is stale.
        if backup.exists():
            remove_tree(backup)
        os.rename(target, backup)
    os.rename(temporary, target)
    fsync_directory(parent)
    if backup.exists():
        remove_tree(backup)


def read_files(directory: str | os.PathLike[str]) -> dict[str, bytes]:
    """Read every regular file in ``directory`` into a dict of file name to bytes.

    When ``directory`` is missing but the backup of an interrupted `write_files_atomically`
    exists, the backup is read instead and a warning is logged.

    Raises:
        FileNotFoundError: neither ``directory`` nor its backup exists.
    """
    target = Path(directory)
    if not target.is_dir():
        backup = backup_path(target)
        if not backup.is_dir():
            raise FileNotFoundError(f"state directory {str(target)!r} not found")
        logger.warning("state directory %s is missing after an interrupted save; reading %s", target, backup)
        target = backup
    files: dict[str, bytes] = {}
    for entry in sorted(target.iterdir()):
        if entry.is_file() and not entry.is_symlink():
            files[entry.name] = entry.read_bytes()
    return files


def _remove_stale_temporaries(target: Path) -> None:
    prefix = f".{target.name}{_TEMP_MARKER}"
    for entry in target.parent.iterdir():
        if entry.name.startswith(prefix):
            logger.info("removing %s left by an interrupted save", entry)
            remove_tree(entry)
