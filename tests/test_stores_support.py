"""Shared helpers for the store tests: backend specs, server checks and cleanup.

Redis and PostgreSQL tests use the real servers on 127.0.0.1 and fail (never skip) with
a message naming the server when it is down. Each test gets its own namespace (a uuid),
and everything stored in it is removed afterwards.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from sidecar_memory.stores import DirectoryStore, SQLiteStore, StateStore

REDIS_URL = os.environ.get("SIDECAR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_DSN = os.environ.get("SIDECAR_TEST_POSTGRES_DSN", "postgresql://127.0.0.1:5432/test")
BACKENDS = ("directory", "sqlite", "redis", "postgres")


def require_redis() -> None:
    """Fail the test with a clear message unless Redis replies to PING at REDIS_URL."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as error:
        pytest.fail(
            f"Redis is not reachable at {REDIS_URL} ({error}). The Redis tests need a running server: "
            f"start redis-server on 127.0.0.1:6379 or set SIDECAR_TEST_REDIS_URL.",
            pytrace=False,
        )
    finally:
        client.close()


def require_postgres() -> None:
    """Fail the test with a clear message unless PostgreSQL accepts a connection at POSTGRES_DSN."""
    import psycopg

    try:
        psycopg.connect(POSTGRES_DSN, connect_timeout=3).close()
    except psycopg.OperationalError as error:
        pytest.fail(
            f"PostgreSQL is not reachable at {POSTGRES_DSN} ({error}). The PostgreSQL tests need a running "
            f"server with database 'test': start it on 127.0.0.1:5432 or set SIDECAR_TEST_POSTGRES_DSN.",
            pytrace=False,
        )


@dataclass(frozen=True)
class StoreSpec:
    """Everything needed to open the same store in another process (picklable)."""

    backend: str
    directory: str
    namespace: str

    def open(self) -> StateStore:
        if self.backend == "directory":
            return DirectoryStore(Path(self.directory) / "states", namespace=self.namespace)
        if self.backend == "sqlite":
            return SQLiteStore(Path(self.directory) / "states.db", namespace=self.namespace)
        if self.backend == "redis":
            from sidecar_memory.stores import RedisStore

            return RedisStore(REDIS_URL, namespace=self.namespace)
        if self.backend == "postgres":
            from sidecar_memory.stores import PostgresStore

            return PostgresStore(POSTGRES_DSN, namespace=self.namespace)
        raise ValueError(f"unknown backend {self.backend!r}")


def make_spec(backend: str, directory: Path) -> StoreSpec:
    """Check that the backend's server is up and return a spec with a fresh namespace."""
    if backend == "redis":
        require_redis()
    elif backend == "postgres":
        require_postgres()
    return StoreSpec(backend, str(directory), f"test-{uuid.uuid4().hex}")


def remove_namespace(spec: StoreSpec) -> None:
    """Delete every session stored under the spec's namespace (the directory is pytest's tmp_path)."""
    store = spec.open()
    try:
        for session_id in store.list_sessions():
            store.delete(session_id)
    finally:
        store.close()


@pytest.fixture(params=BACKENDS)
def store_spec(request: pytest.FixtureRequest, tmp_path: Path):
    spec = make_spec(request.param, tmp_path)
    yield spec
    remove_namespace(spec)


@pytest.fixture
def store(store_spec: StoreSpec):
    opened = store_spec.open()
    yield opened
    opened.close()
