"""`PostgresStore`: sessions as rows of two PostgreSQL tables.

Table layout (names shown for the default ``table="sidecar_state"``)::

    sidecar_state           (namespace, session_id) -> version, updated_at     one row per session
    sidecar_state_versions  (namespace, session_id, version) -> manifest, payload

A save is one transaction: the compare-and-set on the session row
(``INSERT ... ON CONFLICT DO NOTHING`` for the first version, ``UPDATE ... WHERE
version = %s`` afterwards, which row-locks the session until commit), the insert of the
new version row and the removal of versions older than the previous one. A client that
dies mid-save leaves the last committed state. Each payload is written once; the backup
is the row written by the save before. The tables are created on first use under an
advisory lock, so many processes may start at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

try:
    import psycopg
    from psycopg import sql
except ImportError as error:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        'PostgresStore needs the psycopg package; install it with: pip install "sidecar-memory[postgres]"'
    ) from error

from .base import (
    LoopLocal,
    StateBlob,
    StateStore,
    StoreConnectionError,
    StoredState,
    VersionConflictError,
    build_manifest,
    encode_manifest,
    pack_payload,
    redact_url,
    unpack_payload,
    validate_table_name,
)

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 10


class PostgresStore(StateStore):
    """Sessions in PostgreSQL; safe for any number of processes and hosts.

    Each store keeps one connection for sync calls (shared by threads, one statement at a
    time) and one ``psycopg.AsyncConnection`` per event loop for async calls. A broken
    connection is dropped and reopened on the next call.
    """

    def __init__(
        self,
        dsn: str = "postgresql://127.0.0.1:5432/test",
        *,
        namespace: str = "default",
        table: str = "sidecar_state",
    ):
        super().__init__(namespace=namespace)
        self.dsn = dsn
        self.table = validate_table_name(table)
        self._table_sql = sql.Identifier(self.table)
        self._connection: psycopg.Connection | None = None
        self._connection_pid: int | None = None
        self._lock = threading.Lock()
        self._async_connections = LoopLocal()
        self._schema_ready = False
        self._statements = _Statements(self._table_sql)

    # -- sync hooks ---------------------------------------------------------

    def _load(self, session_id: str) -> StoredState | None:
        row = self._fetchone(self._statements.load, (self.namespace, session_id))
        return self._to_state(session_id, row)

    def _load_previous(self, session_id: str) -> StoredState | None:
        row = self._fetchone(self._statements.load_previous, (self.namespace, session_id))
        return self._to_state(session_id, row, previous=True)

    def _save(self, session_id: str, blob: StateBlob, expected_version: int) -> int:
        claim, claim_parameters, insert, insert_parameters = self._save_statements(session_id, blob, expected_version)
        key = (self.namespace, session_id)
        with self._cursor() as cursor, cursor.connection.transaction() as transaction:
            cursor.execute(claim, claim_parameters)
            if cursor.rowcount == 1:
                cursor.execute(insert, insert_parameters)
                cursor.execute(self._statements.prune, (*key, expected_version))
                return expected_version + 1
            cursor.execute(self._statements.version, key)
            row = cursor.fetchone()
            transaction.rollback = True  # nothing was written; end the transaction cleanly
        raise VersionConflictError(session_id, expected_version, row[0] if row else 0, where=self._location(session_id))

    def _delete(self, session_id: str) -> bool:
        key = (self.namespace, session_id)
        with self._cursor() as cursor, cursor.connection.transaction():
            cursor.execute(self._statements.delete_session, key)
            existed = cursor.rowcount > 0
            cursor.execute(self._statements.delete_versions, key)
        return existed

    def _list(self) -> list[str]:
        with self._cursor() as cursor:
            cursor.execute(self._statements.list, (self.namespace,))
            return [row[0] for row in cursor.fetchall()]

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    # -- async hooks --------------------------------------------------------

    async def _aload(self, session_id: str) -> StoredState | None:
        async with self._acursor() as cursor:
            await cursor.execute(self._statements.load, (self.namespace, session_id))
            row = await cursor.fetchone()
        return self._to_state(session_id, row)

    async def _aload_previous(self, session_id: str) -> StoredState | None:
        async with self._acursor() as cursor:
            await cursor.execute(self._statements.load_previous, (self.namespace, session_id))
            row = await cursor.fetchone()
        return self._to_state(session_id, row, previous=True)

    async def _asave(self, session_id: str, blob: StateBlob, expected_version: int) -> int:
        query, parameters = self._save_statement(session_id, blob, expected_version)
        async with self._acursor() as cursor:
            await cursor.execute(query, parameters)
            if cursor.rowcount == 1:
                return expected_version + 1
            await cursor.execute(self._statements.version, (self.namespace, session_id))
            row = await cursor.fetchone()
        raise VersionConflictError(session_id, expected_version, row[0] if row else 0, where=self._location(session_id))

    async def _adelete(self, session_id: str) -> bool:
        async with self._acursor() as cursor:
            await cursor.execute(self._statements.delete, (self.namespace, session_id))
            return cursor.rowcount > 0

    async def _alist(self) -> list[str]:
        async with self._acursor() as cursor:
            await cursor.execute(self._statements.list, (self.namespace,))
            return [row[0] for row in await cursor.fetchall()]

    async def aclose(self) -> None:
        """Close the async connection of the running event loop, then the sync connection."""
        entry = self._async_connections.pop()
        if entry is not None:
            await entry[0].close()
        self.close()

    # -- helpers ------------------------------------------------------------

    def _location(self, session_id: str) -> str:
        return f"postgresql table {self.table} namespace={self.namespace!r} session={session_id!r}"

    def _save_statement(self, session_id: str, blob: StateBlob, expected_version: int) -> tuple[sql.Composed, tuple]:
        manifest = encode_manifest(build_manifest(blob))
        payload = pack_payload(blob)
        if expected_version == 0:
            return self._statements.insert, (self.namespace, session_id, manifest, payload)
        return self._statements.update, (manifest, payload, self.namespace, session_id, expected_version)

    def _to_state(self, session_id: str, row: tuple | None, *, previous: bool = False) -> StoredState | None:
        if row is None or row[0] is None:
            return None
        version, manifest, payload = row
        location = self._location(session_id) + (" (previous version)" if previous else "")
        return StoredState(unpack_payload(bytes(manifest), bytes(payload), location, version), version)

    def _connection_error(self, error: Exception) -> StoreConnectionError:
        return StoreConnectionError(
            f"PostgreSQL at {redact_url(self.dsn)} failed: {error}. Check that the server is running and "
            f"accepts connections, or pass another dsn= to PostgresStore."
        )

    def _fetchone(self, query: sql.Composed, parameters: tuple) -> tuple | None:
        with self._cursor() as cursor:
            cursor.execute(query, parameters)
            return cursor.fetchone()

    @contextmanager
    def _cursor(self) -> Iterator[psycopg.Cursor]:
        with self._lock:
            try:
                connection = self._open_connection()
                with connection.cursor() as cursor:
                    yield cursor
            except psycopg.OperationalError as error:
                self._drop_connection()
                raise self._connection_error(error) from error

    def _open_connection(self) -> psycopg.Connection:
        if self._connection is not None and not self._connection.closed and self._connection_pid == os.getpid():
            return self._connection
        connection = psycopg.connect(self.dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS)
        if not self._schema_ready:
            with connection.transaction():
                connection.execute(self._statements.schema_lock, (self.table,))
                connection.execute(self._statements.create_table)
            self._schema_ready = True
        self._connection = connection
        self._connection_pid = os.getpid()
        return connection

    def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and self._connection_pid == os.getpid():
            try:
                connection.close()
            except psycopg.Error as error:
                logger.debug("closing a broken PostgreSQL connection failed: %s", error)

    @asynccontextmanager
    async def _acursor(self):
        entry = self._async_connections.get()
        if entry is None:
            entry = (None, asyncio.Lock())
            self._async_connections.set(entry)
        connection, lock = entry
        async with lock:
            try:
                if connection is None or connection.closed:
                    connection = await psycopg.AsyncConnection.connect(
                        self.dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS
                    )
                    if not self._schema_ready:
                        async with connection.transaction():
                            await connection.execute(self._statements.schema_lock, (self.table,))
                            await connection.execute(self._statements.create_table)
                        self._schema_ready = True
                    self._async_connections.set((connection, lock))
                async with connection.cursor() as cursor:
                    yield cursor
            except psycopg.OperationalError as error:
                self._async_connections.set((None, lock))
                raise self._connection_error(error) from error

    def __repr__(self) -> str:
        return f"PostgresStore({redact_url(self.dsn)!r}, namespace={self.namespace!r}, table={self.table!r})"


class _Statements:
    """The SQL statements of one table."""

    def __init__(self, table: sql.Identifier):
        self.schema_lock = sql.SQL("SELECT pg_advisory_xact_lock(hashtext(%s))")
        self.create_table = sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            "namespace text NOT NULL, session_id text NOT NULL, "
            "version bigint NOT NULL, manifest bytea NOT NULL, payload bytea NOT NULL, "
            "previous_version bigint, previous_manifest bytea, previous_payload bytea, "
            "updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (namespace, session_id))"
        ).format(table)
        self.load = sql.SQL(
            "SELECT version, manifest, payload FROM {} WHERE namespace = %s AND session_id = %s"
        ).format(table)
        self.load_previous = sql.SQL(
            "SELECT previous_version, previous_manifest, previous_payload FROM {} "
            "WHERE namespace = %s AND session_id = %s"
        ).format(table)
        self.version = sql.SQL("SELECT version FROM {} WHERE namespace = %s AND session_id = %s").format(table)
        self.insert = sql.SQL(
            "INSERT INTO {} (namespace, session_id, version, manifest, payload) VALUES (%s, %s, 1, %s, %s) "
            "ON CONFLICT (namespace, session_id) DO NOTHING"
        ).format(table)
        # SET expressions read the row's old values, so the current version moves to previous_*.
        self.update = sql.SQL(
            "UPDATE {} SET previous_version = version, previous_manifest = manifest, previous_payload = payload, "
            "version = version + 1, manifest = %s, payload = %s, updated_at = now() "
            "WHERE namespace = %s AND session_id = %s AND version = %s"
        ).format(table)
        self.delete = sql.SQL("DELETE FROM {} WHERE namespace = %s AND session_id = %s").format(table)
        self.list = sql.SQL("SELECT session_id FROM {} WHERE namespace = %s").format(table)
