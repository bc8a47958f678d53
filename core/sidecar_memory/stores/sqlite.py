"""`SQLiteStore`: many sessions in one embedded SQLite database file.

One row per session holds the current version and the previous one (the backup)::

    namespace, session_id        primary key
    version, manifest, payload   current version
    previous_version, previous_manifest, previous_payload
    updated_at                   seconds since the epoch

A save is a single statement, so SQLite's transaction journal makes it all-or-nothing.
The compare-and-set is ``INSERT ... ON CONFLICT DO NOTHING`` for the first version and
``UPDATE ... WHERE version = ?`` afterwards. The database runs in WAL mode with
``synchronous=FULL`` (a committed save survives a power loss) and ``secure_delete=ON``
(deleted rows are overwritten with zeros in the database file).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

from .base import (
    StateBlob,
    StateStore,
    StoreConnectionError,
    StoredState,
    VersionConflictError,
    build_manifest,
    encode_manifest,
    pack_payload,
    unpack_payload,
    validate_table_name,
)

logger = logging.getLogger(__name__)

# Seconds a statement waits for another connection's write lock before failing.
BUSY_TIMEOUT_SECONDS = 60.0


class SQLiteStore(StateStore):
    """Sessions as rows of one table in a SQLite file; safe for several threads and processes.

    Each thread opens its own connection. NOTE: SQLite's locking needs a local file system;
    do not share the database file over NFS or SMB.
    """

    def __init__(self, path: str | os.PathLike[str], *, namespace: str = "default", table: str = "sidecar_state"):
        super().__init__(namespace=namespace)
        if str(path) in ("", ":memory:") or str(path).startswith("file::memory:"):
            raise ValueError(
                f"SQLiteStore needs a database file, got {str(path)!r}: each thread opens its own "
                f"connection, and in-memory databases are not shared between connections. Pass a file path."
            )
        self.path = Path(path)
        self.table = validate_table_name(table)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._schema_ready = False

    # -- hooks --------------------------------------------------------------

    def _load(self, session_id: str) -> StoredState | None:
        row = self._execute(
            f"SELECT version, manifest, payload FROM {self.table} WHERE namespace = ? AND session_id = ?",
            (self.namespace, session_id),
        ).fetchone()
        return self._to_state(session_id, row)

    def _load_previous(self, session_id: str) -> StoredState | None:
        row = self._execute(
            f"SELECT previous_version, previous_manifest, previous_payload FROM {self.table} "
            f"WHERE namespace = ? AND session_id = ?",
            (self.namespace, session_id),
        ).fetchone()
        return self._to_state(session_id, row, previous=True)

    def _save(self, session_id: str, blob: StateBlob, expected_version: int) -> int:
        manifest = encode_manifest(build_manifest(blob))
        payload = pack_payload(blob)
        now = time.time()
        if expected_version == 0:
            cursor = self._execute(
                f"INSERT INTO {self.table} (namespace, session_id, version, manifest, payload, updated_at) "
                f"VALUES (?, ?, 1, ?, ?, ?) ON CONFLICT (namespace, session_id) DO NOTHING",
                (self.namespace, session_id, manifest, payload, now),
            )
        else:
            # SET expressions read the row's old values, so the current version moves to previous_*.
            cursor = self._execute(
                f"UPDATE {self.table} SET previous_version = version, previous_manifest = manifest, "
                f"previous_payload = payload, version = version + 1, manifest = ?, payload = ?, updated_at = ? "
                f"WHERE namespace = ? AND session_id = ? AND version = ?",
                (manifest, payload, now, self.namespace, session_id, expected_version),
            )
        if cursor.rowcount == 1:
            return expected_version + 1
        row = self._execute(
            f"SELECT version FROM {self.table} WHERE namespace = ? AND session_id = ?",
            (self.namespace, session_id),
        ).fetchone()
        raise VersionConflictError(session_id, expected_version, row[0] if row else 0, where=self._location(session_id))

    def _delete(self, session_id: str) -> bool:
        cursor = self._execute(
            f"DELETE FROM {self.table} WHERE namespace = ? AND session_id = ?", (self.namespace, session_id)
        )
        if cursor.rowcount:
            # Copy the zeroed pages back into the database file so that the WAL file no longer
            # holds the deleted rows. Best effort: a busy checkpoint leaves the rest for later.
            busy, _, _ = self._execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy:
                logger.debug("WAL checkpoint after deleting %s was busy; it completes later", session_id)
        return cursor.rowcount > 0

    def _list(self) -> list[str]:
        rows = self._execute(f"SELECT session_id FROM {self.table} WHERE namespace = ?", (self.namespace,))
        return [row[0] for row in rows.fetchall()]

    def close(self) -> None:
        """Close every connection this store opened, in any thread."""
        with self._connections_lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()
        self._local = threading.local()

    # -- helpers ------------------------------------------------------------

    def _location(self, session_id: str) -> str:
        return f"sqlite:{self.path} table {self.table} namespace={self.namespace!r} session={session_id!r}"

    def _to_state(self, session_id: str, row: tuple | None, *, previous: bool = False) -> StoredState | None:
        if row is None or row[0] is None:
            return None
        version, manifest, payload = row
        location = self._location(session_id) + (" (previous version)" if previous else "")
        return StoredState(unpack_payload(manifest, payload, location, version), version)

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is not None and self._local.pid == os.getpid():
            return connection
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
            )
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = FULL")
            connection.execute("PRAGMA secure_delete = ON")
            if not self._schema_ready:
                self._create_table(connection)
        except (sqlite3.Error, OSError) as error:
            raise StoreConnectionError(
                f"cannot open SQLite database {str(self.path)!r}: {error}. Check that the directory "
                f"exists and is writable."
            ) from error
        self._local.connection = connection
        self._local.pid = os.getpid()
        with self._connections_lock:
            self._connections.append(connection)
        return connection

    def _create_table(self, connection: sqlite3.Connection) -> None:
        connection.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} ("
            f"namespace TEXT NOT NULL, session_id TEXT NOT NULL, "
            f"version INTEGER NOT NULL, manifest BLOB NOT NULL, payload BLOB NOT NULL, "
            f"previous_version INTEGER, previous_manifest BLOB, previous_payload BLOB, "
            f"updated_at REAL NOT NULL, PRIMARY KEY (namespace, session_id))"
        )
        self._schema_ready = True

    def _execute(self, sql: str, parameters: tuple = ()) -> sqlite3.Cursor:
        try:
            return self._connection().execute(sql, parameters)
        except sqlite3.OperationalError as error:
            raise StoreConnectionError(
                f"SQLite statement on {str(self.path)!r} failed: {error}. If the database is locked, "
                f"another process held its write lock for over {BUSY_TIMEOUT_SECONDS:.0f} s."
            ) from error

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r}, namespace={self.namespace!r})"
