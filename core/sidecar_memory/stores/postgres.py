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
from collections.abc import Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

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

    Sync calls share a pool of up to ``pool_size`` connections (threads take turns), and
    async calls use a pool of ``psycopg.AsyncConnection`` of the same size per event loop.
    Connections open on first use; a broken one is dropped and the next call opens a new one.
    """

    def __init__(
        self,
        dsn: str = "postgresql://127.0.0.1:5432/test",
        *,
        namespace: str = "default",
        table: str = "sidecar_state",
        pool_size: int = 4,
    ):
        super().__init__(namespace=namespace)
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ValueError(f"pool_size must be a positive int, got {pool_size!r}")
        self.dsn = dsn
        self.table = validate_table_name(table)
        self.versions_table = f"{self.table}_versions"
        self.pool_size = pool_size
        self._statements = _Statements(sql.Identifier(self.table), sql.Identifier(self.versions_table))
        self._schema_ready = False
        self._pool = _Pool(self._connect, pool_size)
        self._async_pools = LoopLocal()

    # -- sync hooks ---------------------------------------------------------

    def _load(self, session_id: str) -> StoredState | None:
        return self._load_at_offset(session_id, 0)

    def _load_previous(self, session_id: str) -> StoredState | None:
        return self._load_at_offset(session_id, 1)

    def _save(self, session_id: str, blob: StateBlob, expected_version: int) -> int:
        claim, claim_parameters, insert, insert_parameters = self._save_statements(session_id, blob, expected_version)
        key = (self.namespace, session_id)
        with self._cursor() as cursor, cursor.connection.transaction():
            cursor.execute(claim, claim_parameters)
            if cursor.rowcount == 1:
                cursor.execute(insert, insert_parameters)
                cursor.execute(self._statements.prune, (*key, expected_version))
                return expected_version + 1
            cursor.execute(self._statements.version, key)
            row = cursor.fetchone()
            # Raising inside the block rolls the (empty) transaction back.
            raise self._conflict(session_id, expected_version, row)

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
        """Close the idle sync connections."""
        self._pool.close()

    # -- async hooks --------------------------------------------------------

    async def _aload(self, session_id: str) -> StoredState | None:
        return await self._aload_at_offset(session_id, 0)

    async def _aload_previous(self, session_id: str) -> StoredState | None:
        return await self._aload_at_offset(session_id, 1)

    async def _asave(self, session_id: str, blob: StateBlob, expected_version: int) -> int:
        claim, claim_parameters, insert, insert_parameters = self._save_statements(session_id, blob, expected_version)
        key = (self.namespace, session_id)
        async with self._acursor() as cursor, cursor.connection.transaction():
            await cursor.execute(claim, claim_parameters)
            if cursor.rowcount == 1:
                await cursor.execute(insert, insert_parameters)
                await cursor.execute(self._statements.prune, (*key, expected_version))
                return expected_version + 1
            await cursor.execute(self._statements.version, key)
            row = await cursor.fetchone()
            raise self._conflict(session_id, expected_version, row)

    async def _adelete(self, session_id: str) -> bool:
        key = (self.namespace, session_id)
        async with self._acursor() as cursor, cursor.connection.transaction():
            await cursor.execute(self._statements.delete_session, key)
            existed = cursor.rowcount > 0
            await cursor.execute(self._statements.delete_versions, key)
        return existed

    async def _alist(self) -> list[str]:
        async with self._acursor() as cursor:
            await cursor.execute(self._statements.list, (self.namespace,))
            return [row[0] for row in await cursor.fetchall()]

    async def aclose(self) -> None:
        """Close the idle async connections of the running event loop, then the sync ones."""
        pool = self._async_pools.pop()
        if pool is not None:
            await pool.close()
        self.close()

    # -- helpers ------------------------------------------------------------

    def _location(self, session_id: str) -> str:
        return f"postgresql table {self.versions_table} namespace={self.namespace!r} session={session_id!r}"

    def _load_at_offset(self, session_id: str, offset: int) -> StoredState | None:
        # Binary results: bytea arrives as raw bytes instead of hex text of twice the size.
        with self._cursor(binary=True) as cursor:
            cursor.execute(self._statements.load, (offset, self.namespace, session_id))
            row = cursor.fetchone()
        return self._to_state(session_id, row)

    async def _aload_at_offset(self, session_id: str, offset: int) -> StoredState | None:
        async with self._acursor(binary=True) as cursor:
            await cursor.execute(self._statements.load, (offset, self.namespace, session_id))
            row = await cursor.fetchone()
        return self._to_state(session_id, row)

    def _save_statements(
        self, session_id: str, blob: StateBlob, expected_version: int
    ) -> tuple[sql.Composed, tuple, sql.Composed, tuple]:
        """Return the compare-and-set statement and the version insert, each with its parameters."""
        key = (self.namespace, session_id)
        if expected_version == 0:
            claim, claim_parameters = self._statements.claim_first, key
        else:
            claim, claim_parameters = self._statements.claim_next, (*key, expected_version)
        manifest = encode_manifest(build_manifest(blob))
        insert_parameters = (*key, expected_version + 1, manifest, pack_payload(blob))
        return claim, claim_parameters, self._statements.insert_version, insert_parameters

    def _conflict(self, session_id: str, expected_version: int, row: tuple | None) -> VersionConflictError:
        return VersionConflictError(
            session_id, expected_version, row[0] if row else 0, where=self._location(session_id)
        )

    def _to_state(self, session_id: str, row: tuple | None) -> StoredState | None:
        if row is None:
            return None
        version, manifest, payload = row
        location = self._location(session_id) + f" version={version}"
        return StoredState(unpack_payload(bytes(manifest), bytes(payload), location, version), version)

    def _connection_error(self, error: Exception) -> StoreConnectionError:
        return StoreConnectionError(
            f"PostgreSQL at {redact_url(self.dsn)} failed: {error}. Check that the server is running and "
            f"accepts connections, or pass another dsn= to PostgresStore."
        )

    def _connect(self) -> psycopg.Connection:
        connection = psycopg.connect(self.dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS)
        if not self._schema_ready:
            with connection.transaction():
                connection.execute(self._statements.schema_lock, (self.table,))
                for statement in self._statements.create_tables:
                    connection.execute(statement)
            self._schema_ready = True
        return connection

    async def _aconnect(self) -> psycopg.AsyncConnection:
        connection = await psycopg.AsyncConnection.connect(
            self.dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS
        )
        if not self._schema_ready:
            async with connection.transaction():
                await connection.execute(self._statements.schema_lock, (self.table,))
                for statement in self._statements.create_tables:
                    await connection.execute(statement)
            self._schema_ready = True
        return connection

    @contextmanager
    def _cursor(self, *, binary: bool = False) -> Iterator[psycopg.Cursor]:
        try:
            with self._pool.connection() as connection, connection.cursor(binary=binary) as cursor:
                yield cursor
        except psycopg.OperationalError as error:
            raise self._connection_error(error) from error

    @asynccontextmanager
    async def _acursor(self, *, binary: bool = False):
        pool = self._async_pools.get()
        if pool is None:
            pool = _AsyncPool(self._aconnect, self.pool_size)
            self._async_pools.set(pool)
        try:
            async with pool.connection() as connection, connection.cursor(binary=binary) as cursor:
                yield cursor
        except psycopg.OperationalError as error:
            raise self._connection_error(error) from error

    def __repr__(self) -> str:
        return f"PostgresStore({redact_url(self.dsn)!r}, namespace={self.namespace!r}, table={self.table!r})"


class _Pool:
    """Up to ``size`` sync connections, opened on demand and reused; broken ones are discarded."""

    def __init__(self, connect: Callable[[], psycopg.Connection], size: int):
        self._connect = connect
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._idle: list[psycopg.Connection] = []
        self._pid = os.getpid()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        with self._slots:
            connection = self._take_idle()
            if connection is None:
                connection = self._connect()
            try:
                yield connection
            except psycopg.OperationalError:
                connection.close()
                raise
            finally:
                if not connection.closed:
                    with self._lock:
                        self._idle.append(connection)

    def _take_idle(self) -> psycopg.Connection | None:
        with self._lock:
            if self._pid != os.getpid():
                # Connections inherited through fork belong to the parent; never use or close them here.
                self._idle, self._pid = [], os.getpid()
            while self._idle:
                connection = self._idle.pop()
                if not connection.closed:
                    return connection
        return None

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
            inherited = self._pid != os.getpid()
        if not inherited:
            for connection in idle:
                connection.close()


class _AsyncPool:
    """The async counterpart of `_Pool`, bound to one event loop."""

    def __init__(self, connect: Callable[[], Awaitable[psycopg.AsyncConnection]], size: int):
        self._connect = connect
        self._slots = asyncio.BoundedSemaphore(size)
        self._idle: list[psycopg.AsyncConnection] = []

    @asynccontextmanager
    async def connection(self):
        async with self._slots:
            connection = None
            while self._idle and connection is None:
                candidate = self._idle.pop()
                connection = None if candidate.closed else candidate
            if connection is None:
                connection = await self._connect()
            try:
                yield connection
            except psycopg.OperationalError:
                await connection.close()
                raise
            finally:
                if not connection.closed:
                    self._idle.append(connection)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.close()


class _Statements:
    """The SQL statements for one pair of tables."""

    def __init__(self, sessions: sql.Identifier, versions: sql.Identifier):
        self.schema_lock = sql.SQL("SELECT pg_advisory_xact_lock(hashtext(%s))")
        self.create_tables = [
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (namespace text NOT NULL, session_id text NOT NULL, "
                "version bigint NOT NULL, updated_at timestamptz NOT NULL DEFAULT now(), "
                "PRIMARY KEY (namespace, session_id))"
            ).format(sessions),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (namespace text NOT NULL, session_id text NOT NULL, "
                "version bigint NOT NULL, manifest bytea NOT NULL, payload bytea NOT NULL, "
                "PRIMARY KEY (namespace, session_id, version))"
            ).format(versions),
        ]

        # Parameters: offset (0 = current, 1 = previous), namespace, session id. One statement,
        # so the session row and the version row come from one snapshot.
        self.load = sql.SQL(
            "SELECT v.version, v.manifest, v.payload FROM {} AS s JOIN {} AS v "
            "ON v.namespace = s.namespace AND v.session_id = s.session_id AND v.version = s.version - %s "
            "WHERE s.namespace = %s AND s.session_id = %s"
        ).format(sessions, versions)
        self.version = sql.SQL("SELECT version FROM {} WHERE namespace = %s AND session_id = %s").format(sessions)

        self.claim_first = sql.SQL(
            "INSERT INTO {} (namespace, session_id, version) VALUES (%s, %s, 1) "
            "ON CONFLICT (namespace, session_id) DO NOTHING"
        ).format(sessions)
        self.claim_next = sql.SQL(
            "UPDATE {} SET version = version + 1, updated_at = now() "
            "WHERE namespace = %s AND session_id = %s AND version = %s"
        ).format(sessions)

        self.insert_version = sql.SQL(
            "INSERT INTO {} (namespace, session_id, version, manifest, payload) VALUES (%s, %s, %s, %s, %s)"
        ).format(versions)
        # Parameters: namespace, session id, the version before the new one (kept as the backup).
        self.prune = sql.SQL(
            "DELETE FROM {} WHERE namespace = %s AND session_id = %s AND version < %s"
        ).format(versions)

        self.delete_session = sql.SQL("DELETE FROM {} WHERE namespace = %s AND session_id = %s").format(sessions)
        self.delete_versions = sql.SQL("DELETE FROM {} WHERE namespace = %s AND session_id = %s").format(versions)
        self.list = sql.SQL("SELECT session_id FROM {} WHERE namespace = %s").format(sessions)
