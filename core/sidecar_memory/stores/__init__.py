"""State stores: versioned, checksummed storage of sidecar states for many users.

`DirectoryStore` and `SQLiteStore` need only the standard library. `RedisStore` and
`PostgresStore` are imported on first access, so this package imports without the
``redis`` and ``psycopg`` packages. Accessing either class without its package raises
ImportError naming the extra to install.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .base import (
    CorruptStateError,
    InvalidSessionIdError,
    RetryPolicy,
    StateBlob,
    StateError,
    StateStore,
    StoreConnectionError,
    StoredState,
    UpdateRetriesExhaustedError,
    VersionConflictError,
    validate_namespace,
    validate_session_id,
)
from .directory import DirectoryStore
from .files import read_files, write_files_atomically
from .sqlite import SQLiteStore

if TYPE_CHECKING:
    from .postgres import PostgresStore
    from .redis import RedisStore

_LAZY_CLASSES = {"RedisStore": ".redis", "PostgresStore": ".postgres"}

__all__ = [
    "CorruptStateError",
    "DirectoryStore",
    "InvalidSessionIdError",
    "PostgresStore",
    "RedisStore",
    "RetryPolicy",
    "SQLiteStore",
    "StateBlob",
    "StateError",
    "StateStore",
    "StoreConnectionError",
    "StoredState",
    "UpdateRetriesExhaustedError",
    "VersionConflictError",
    "open_store",
    "read_files",
    "validate_namespace",
    "validate_session_id",
    "write_files_atomically",
]


def __getattr__(name: str) -> Any:
    module_name = _LAZY_CLASSES.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module_name, __name__), name)


def open_store(url: str, *, namespace: str = "default") -> StateStore:
    """Open a store from a URL.

    ``redis://`` and ``rediss://`` open a `RedisStore`; ``postgresql://`` and ``postgres://``
    a `PostgresStore`; ``sqlite:///path/to/file.db`` a `SQLiteStore`; ``file:///path`` or a
    plain path a `DirectoryStore`.
    """
    scheme, separator, rest = url.partition("://")
    if not separator:
        return DirectoryStore(url, namespace=namespace)
    scheme = scheme.lower()
    if scheme in ("redis", "rediss", "unix"):
        return __getattr__("RedisStore")(url, namespace=namespace)
    if scheme in ("postgresql", "postgres"):
        return __getattr__("PostgresStore")(url, namespace=namespace)
    if scheme == "sqlite":
        return SQLiteStore(rest, namespace=namespace)
    if scheme == "file":
        return DirectoryStore(rest, namespace=namespace)
    raise ValueError(
        f"unsupported store URL {url!r}: use redis://, postgresql://, sqlite:///path, file:///path or a plain path"
    )
