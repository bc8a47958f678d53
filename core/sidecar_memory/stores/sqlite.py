"""`SQLiteStore`: many sessions in one embedded SQLite database file.

Two tables (names shown for the default ``table="sidecar_state"``)::

    sidecar_state           (namespace, session_id) -> version, updated_at     one row per session
    sidecar_state_versions  (namespace, session_id, version) -> manifest, payload

A save runs in one ``BEGIN IMMEDIATE`` transaction: the compare-and-set on the session
row (``INSERT ... ON CONFLICT DO NOTHING`` for the first version, ``UPDATE ... WHERE
version = ?`` afterwards), the insert of the new version row, and the removal of
versions older than the previous one. SQLite's journal makes the transaction
all-or-nothing, so a process killed mid-save leaves the last committed state. Each
payload is written once; the backup is the row written by the save before.

The database runs in WAL mode with ``synchronous=FULL`` (a committed save survives a
power loss) and ``secure_delete=ON`` (deleted rows are overwritten with zeros).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
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
    """Sessions as rows in a SQLite file; safe for several threads and processes on one machine.

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
        self.versions_table = f"{self.table}_versions"
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._schema_ready = False

    # -- hooks --------------------------------------------------------------

    def _load(self, session_id: str) -> StoredState | None:
        return self._load_at_offset(session_id, 0)

    def _load_previous(self, session_id: str) -> StoredState | None:
        return self._load_at_offset(session_id, 1)

    def _save(self, session_id: str, blob: StateBlob, expected_version: int) -> int:
        manifest = encode_manifest(build_manifest(blob))
        payload = pack_payload(blob)
        key = (self.namespace, session_id)
        new_version = expected_version + 1
        with self._transaction() as connection:
            if expected_version == 0:
                cursor = connection.execute(
                    f"INSERT INTO {self.table} (namespace, session_id, version, updated_at) VALUES (?, ?, 1, ?) "
                    f"ON CONFLICT (namespace, session_id) DO NOTHING",
                    (*key, time.time()),
                )
            else:
                cursor = connection.execute(
                    f"UPDATE {self.table} SET version = version + 1, updated_at = ? "
                    f"WHERE namespace = ? AND session_id = ? AND version = ?",
                    (time.time(), *key, expected_version),
                )
            if cursor.rowcount != 1:
                row = connection.execute(
                    f"SELECT version FROM {self.table} WHERE namespace = ? AND session_id = ?", key
                ).fetchone()
                raise VersionConflictError(
                    session_id, expected_version, row[0] if row else 0, where=self._location(session_id)
                )
            connection.execute(
                f"INSERT INTO {self.versions_table} (namespace, session_id, version, manifest, payload) "
                f"VALUES (?, ?, ?, ?, ?)",
                (*key, new_version, manifest, payload),
            )
            connection.execute(
                f"DELETE FROM {self.versions_table} WHERE namespace = ? AND session_id = ? AND version < ?",
                (*key, new_version - 1),
            )
        return new_version

    def _delete(self, session_id: str) -> bool:
        key = (self.namespace, session_id)
        with self._transaction() as connection:
            cursor = connection.execute(f"DELETE FROM {self.table} WHERE namespace = ? AND session_id = ?", key)
            existed = cursor.rowcount > 0
            connection.execute(f"DELETE FROM {self.versions_table} WHERE namespace = ? AND session_id = ?", key)
        if existed:
            # Copy the zeroed pages into the database file so that the WAL file no longer
            # contains the deleted rows. Best effort: a busy checkpoint leaves the rest for a later one.
            busy, _, _ = self._execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy:
                logger.debug("WAL checkpoint after deleting %s was busy; a later one completes it", session_id)
        return existed

    def _list(self) -> list[str]:
        rows = self._execute(f"SELECT session_id FROM {self.table} WHERE namespace = ?", (self.namespace,))
        return [row[0] for row in rows.fetchall()]

    def close(self) -> None:
        """Close every connection this store opened, in any thread.

        Call it only once no other thread is still using the store.
        """
        # NOTE: connections are shared across threads (check_same_thread=False), and
        # closing one while another thread runs a statement on it can crash CPython's
        # sqlite3 module; nothing here waits for in-flight statements.
        with self._connections_lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()
        self._local = threading.local()

    # -- helpers ------------------------------------------------------------

    def _location(self, session_id: str) -> str:
        return f"sqlite:{self.path} table {self.versions_table} namespace={self.namespace!r} session={session_id!r}"

    def _load_at_offset(self, session_id: str, offset: int) -> StoredState | None:
        # One statement reads the session row and the version row from the same snapshot.
        row = self._execute(
            f"SELECT v.version, v.manifest, v.payload FROM {self.table} AS s "
            f"JOIN {self.versions_table} AS v ON v.namespace = s.namespace AND v.session_id = s.session_id "
            f"AND v.version = s.version - ? WHERE s.namespace = ? AND s.session_id = ?",
            (offset, self.namespace, session_id),
        ).fetchone()
        if row is None:
            return None
        version, manifest, payload = row
        location = self._location(session_id) + f" version={version}"
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
            _set_wal_mode(connection)
            connection.execute("PRAGMA synchronous = FULL")
            connection.execute("PRAGMA secure_delete = ON")
            if not self._schema_ready:
                self._create_tables(connection)
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

    def _create_tables(self, connection: sqlite3.Connection) -> None:
        connection.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} ("
            f"namespace TEXT NOT NULL, session_id TEXT NOT NULL, version INTEGER NOT NULL, "
            f"updated_at REAL NOT NULL, PRIMARY KEY (namespace, session_id))"
        )
        connection.execute(
            f"CREATE TABLE IF NOT EXISTS {self.versions_table} ("
            f"namespace TEXT NOT NULL, session_id TEXT NOT NULL, version INTEGER NOT NULL, "
            f"manifest BLOB NOT NULL, payload BLOB NOT NULL, PRIMARY KEY (namespace, session_id, version))"
        )
        self._schema_ready = True

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """Run the body in a write transaction; commit on success, roll back on any error."""
        connection = self._connection()
        self._execute("BEGIN IMMEDIATE")
        try:
            yield connection
            connection.commit()
        except sqlite3.OperationalError as error:
            connection.rollback()
            raise self._statement_error(error) from error
        except BaseException:
            connection.rollback()
            raise

    def _execute(self, sql: str, parameters: tuple = ()) -> sqlite3.Cursor:
        try:
            return self._connection().execute(sql, parameters)
        except sqlite3.OperationalError as error:
            raise self._statement_error(error) from error

    def _statement_error(self, error: sqlite3.OperationalError) -> StoreConnectionError:
        return StoreConnectionError(
            f"SQLite statement on {str(self.path)!r} failed: {error}. If the database is locked, "
            f"another process held its write lock for over {BUSY_TIMEOUT_SECONDS:.0f} s."
        )

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r}, namespace={self.namespace!r})"


def _set_wal_mode(connection: sqlite3.Connection) -> None:
    """Switch the database to WAL journaling, waiting out other connections that hold a lock.

    SQLite answers "database is locked" to a journal-mode change at once, without
    honouring the busy timeout, when another connection is creating the tables.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    while True:
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() >= deadline:
                raise
            time.sleep(0.05)
