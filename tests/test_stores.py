"""Unit tests of every StateStore backend against real files, SQLite, Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from test_stores_support import POSTGRES_DSN, REDIS_URL, StoreSpec, store, store_spec  # noqa: F401

from sidecar_memory.stores import (
    CorruptStateError,
    DirectoryStore,
    InvalidSessionIdError,
    RetryPolicy,
    SQLiteStore,
    StateBlob,
    StateError,
    StateStore,
    StoreConnectionError,
    StoredState,
    UpdateRetriesExhaustedError,
    VersionConflictError,
    open_store,
    validate_session_id,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def make_blob(tag: str, size: int = 64) -> StateBlob:
    """A two-file blob whose bytes depend on ``tag``, including every byte value."""
    body = (tag.encode() + bytes(range(256))) * (size // 256 + 1)
    return StateBlob({"state.json": f'{{"tag": "{tag}"}}'.encode(), "state.safetensors": body[:size]})


# -- round trips and versions -------------------------------------------------


def test_store_roundtrip_arbitrary_bytes(store: StateStore):
    blob = StateBlob({"empty.bin": b"", "zeros.bin": bytes(1000), "all.bin": bytes(range(256)) * 3, "big.bin": os.urandom(3_000_000)})

    version = store.save("alice", blob, expected_version=0)
    loaded = store.load("alice")

    assert version == 1
    assert loaded == StoredState(blob, 1)
    assert dict(loaded.blob.files) == dict(blob.files)


def test_store_missing_session(store: StateStore):
    assert store.load("nobody") is None
    assert store.load_previous("nobody") is None
    assert store.delete("nobody") is False
    assert store.list_sessions() == []


def test_store_versions_increase(store: StateStore):
    versions = [store.save("bob", make_blob(f"v{i}"), expected_version=i) for i in range(5)]

    assert versions == [1, 2, 3, 4, 5]
    assert store.load("bob") == StoredState(make_blob("v4"), 5)
    assert store.load_previous("bob") == StoredState(make_blob("v3"), 4)


def test_store_previous_absent_after_first_save(store: StateStore):
    store.save("carol", make_blob("first"), expected_version=0)

    assert store.load_previous("carol") is None


def test_store_conflict_on_existing(store: StateStore):
    store.save("dave", make_blob("a"), expected_version=0)

    with pytest.raises(VersionConflictError) as caught:
        store.save("dave", make_blob("b"), expected_version=0)

    assert caught.value.session_id == "dave"
    assert caught.value.expected_version == 0
    assert caught.value.actual_version == 1
    assert "'dave'" in str(caught.value)
    assert "expected version 0, found 1" in str(caught.value)
    assert store.load("dave") == StoredState(make_blob("a"), 1)


def test_store_conflict_on_stale_version(store: StateStore):
    for i in range(3):
        store.save("erin", make_blob(f"v{i}"), expected_version=i)

    with pytest.raises(VersionConflictError) as caught:
        store.save("erin", make_blob("stale"), expected_version=2)

    assert caught.value.actual_version == 3
    assert store.load("erin") == StoredState(make_blob("v2"), 3)
    assert store.load_previous("erin") == StoredState(make_blob("v1"), 2)


def test_store_conflict_on_missing(store: StateStore):
    with pytest.raises(VersionConflictError) as caught:
        store.save("frank", make_blob("a"), expected_version=4)

    assert caught.value.actual_version == 0
    assert store.load("frank") is None


def test_store_list_sessions(store: StateStore):
    for session_id in ("u2", "u1", "user@example.com", "chat:42"):
        store.save(session_id, make_blob(session_id), expected_version=0)

    assert store.list_sessions() == ["chat:42", "u1", "u2", "user@example.com"]


def test_store_namespaces_isolated(store_spec: StoreSpec):
    first = store_spec.open()
    second_spec = StoreSpec(store_spec.backend, store_spec.directory, store_spec.namespace + "-other")
    second = second_spec.open()
    try:
        first.save("same-id", make_blob("first"), expected_version=0)
        second.save("same-id", make_blob("second"), expected_version=0)

        assert first.load("same-id").blob == make_blob("first")
        assert second.load("same-id").blob == make_blob("second")
        assert first.delete("same-id") is True
        assert second.load("same-id").blob == make_blob("second")
        assert first.list_sessions() == []
        assert second.list_sessions() == ["same-id"]
    finally:
        second.delete("same-id")
        first.close()
        second.close()


def test_store_delete_then_recreate(store: StateStore):
    store.save("gina", make_blob("a"), expected_version=0)
    store.save("gina", make_blob("b"), expected_version=1)

    assert store.delete("gina") is True
    assert store.load("gina") is None
    assert store.load_previous("gina") is None
    assert store.list_sessions() == []
    assert store.save("gina", make_blob("c"), expected_version=0) == 1


def test_store_save_rejects_bad_arguments(store: StateStore):
    with pytest.raises(TypeError, match="StateBlob"):
        store.save("hank", {"a": b"x"}, expected_version=0)
    for bad_version in (-1, 1.0, True, "0"):
        with pytest.raises(ValueError, match="expected_version"):
            store.save("hank", make_blob("a"), expected_version=bad_version)
    assert store.load("hank") is None


# -- async API ----------------------------------------------------------------


def test_store_async_roundtrip(store: StateStore):
    async def scenario():
        assert await store.aload("ivy") is None
        assert await store.asave("ivy", make_blob("a"), expected_version=0) == 1
        assert await store.asave("ivy", make_blob("b"), expected_version=1) == 2
        with pytest.raises(VersionConflictError):
            await store.asave("ivy", make_blob("c"), expected_version=1)
        current = await store.aload("ivy")
        previous = await store.aload_previous("ivy")
        sessions = await store.alist_sessions()
        deleted = await store.adelete("ivy")
        after_delete = await store.aload("ivy")
        await store.aclose()
        return current, previous, sessions, deleted, after_delete

    current, previous, sessions, deleted, after_delete = asyncio.run(scenario())

    assert current == StoredState(make_blob("b"), 2)
    assert previous == StoredState(make_blob("a"), 1)
    assert sessions == ["ivy"]
    assert deleted is True
    assert after_delete is None


def test_store_async_concurrent_updates(store: StateStore):
    async def increment(current: StoredState | None) -> StateBlob:
        await asyncio.sleep(0)  # let the other tasks load the same version
        count = int(current.blob.files["count"]) if current else 0
        return StateBlob({"count": str(count + 1).encode()})

    async def scenario():
        policy = RetryPolicy(max_attempts=200, base_delay=0.001, max_delay=0.02)
        await asyncio.gather(*(store.aupdate("jack", increment, retry=policy) for _ in range(20)))
        result = await store.aload("jack")
        await store.aclose()
        return result

    result = asyncio.run(scenario())

    assert result.version == 20
    assert result.blob.files["count"] == b"20"


def test_store_sync_after_async_loops(store: StateStore):
    # Async clients are per event loop; a second loop must get its own.
    asyncio.run(store.asave("kim", make_blob("a"), expected_version=0))
    asyncio.run(store.asave("kim", make_blob("b"), expected_version=1))

    assert store.load("kim") == StoredState(make_blob("b"), 2)


# -- update() retry loop ------------------------------------------------------


def test_update_retries_after_conflict(store: StateStore):
    store.save("lee", StateBlob({"count": b"0"}), expected_version=0)
    calls = []

    def apply(current: StoredState) -> StateBlob:
        calls.append(current.version)
        if len(calls) == 1:
            # Another writer saves between this attempt's load and save.
            store.save("lee", StateBlob({"count": b"10"}), expected_version=current.version)
        return StateBlob({"count": str(int(current.blob.files["count"]) + 1).encode()})

    version = store.update("lee", apply)

    assert calls == [1, 2]
    assert version == 3
    assert store.load("lee").blob.files["count"] == b"11"


def test_update_retries_exhausted(store: StateStore):
    store.save("mia", StateBlob({"count": b"0"}), expected_version=0)

    def apply(current: StoredState) -> StateBlob:
        store.save("mia", StateBlob({"count": b"x"}), expected_version=current.version)
        return StateBlob({"count": b"lost"})

    with pytest.raises(UpdateRetriesExhaustedError) as caught:
        store.update("mia", apply, retry=RetryPolicy(max_attempts=3, base_delay=0.0))

    assert "'mia'" in str(caught.value)
    assert "3 attempts" in str(caught.value)
    assert isinstance(caught.value.__cause__, VersionConflictError)
    assert store.load("mia").version == 4


def test_retry_policy_rejects_bad_values():
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="delays"):
        RetryPolicy(base_delay=-1.0)


# -- session id validation ----------------------------------------------------

BAD_IDS = [
    "",
    ".",
    "..",
    "../etc/passwd",
    "a/b",
    "a\\b",
    "/abs",
    "x" * 129,
    "space here",
    "tab\there",
    "nul\x00",
    "new\nline",
    "é",
    "emoji😀",
    "star*",
    "q?",
    "[x]",
    "~tilde",
]
GOOD_IDS = ["a", "x" * 128, "user@example.com", "chat:42", "a.b-c_d", "...", ".hidden", "A1:B2@c3"]


@pytest.mark.parametrize("bad_id", BAD_IDS)
def test_session_id_rejected(store: StateStore, bad_id: str):
    for call in (
        lambda: store.load(bad_id),
        lambda: store.load_previous(bad_id),
        lambda: store.save(bad_id, make_blob("a"), expected_version=0),
        lambda: store.delete(bad_id),
        lambda: store.update(bad_id, lambda current: make_blob("a")),
    ):
        with pytest.raises(InvalidSessionIdError) as caught:
            call()
        assert repr(bad_id) in str(caught.value)
        assert "Allowed:" in str(caught.value)
    assert store.list_sessions() == []


@pytest.mark.parametrize("bad_id", [None, 5, b"bytes", ["a"]])
def test_session_id_rejects_non_strings(bad_id: object):
    with pytest.raises(InvalidSessionIdError) as caught:
        validate_session_id(bad_id)

    assert repr(bad_id) in str(caught.value)
    assert "expected a str" in str(caught.value)


def test_session_id_error_is_value_error():
    with pytest.raises(ValueError):
        validate_session_id("../x")


@pytest.mark.parametrize("good_id", GOOD_IDS)
def test_session_id_accepted(store: StateStore, good_id: str):
    store.save(good_id, make_blob(good_id[:10]), expected_version=0)

    assert store.load(good_id).version == 1
    assert store.list_sessions() == [good_id]
    assert store.delete(good_id) is True


def test_directory_traversal_blocked(tmp_path: Path):
    store = DirectoryStore(tmp_path / "root")
    for bad_id in ("../escape", "..", "a/../../b"):
        with pytest.raises(InvalidSessionIdError):
            store.save(bad_id, make_blob("a"), expected_version=0)

    assert not (tmp_path / "escape").exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad_namespace", ["", "..", "a:b", "a/b", "a@b", "x" * 65])
def test_namespace_rejected(tmp_path: Path, bad_namespace: str):
    with pytest.raises(InvalidSessionIdError) as caught:
        DirectoryStore(tmp_path, namespace=bad_namespace)

    assert repr(bad_namespace) in str(caught.value)


@pytest.mark.parametrize("bad_name", ["../x", "a/b", ".manifest.json", "", "sp ace", "x" * 129])
def test_blob_file_name_rejected(bad_name: str):
    with pytest.raises(InvalidSessionIdError) as caught:
        StateBlob({bad_name: b"data"})

    assert repr(bad_name) in str(caught.value)


def test_blob_rejects_non_bytes():
    with pytest.raises(TypeError, match="'a.json' must be bytes"):
        StateBlob({"a.json": "text"})


def test_blob_is_read_only():
    source = {"a.json": b"1"}
    blob = StateBlob(source)
    source["a.json"] = b"2"

    assert blob.files["a.json"] == b"1"
    with pytest.raises(TypeError):
        blob.files["a.json"] = b"3"


# -- corruption ---------------------------------------------------------------


def corrupt_current(spec: StoreSpec, store: StateStore, session_id: str) -> str:
    """Flip one byte of the stored current payload behind the store's back; return the location text."""
    if spec.backend == "directory":
        version_dir = sorted(store.session_dir(session_id).glob("v*"))[-1]
        path = version_dir / "state.safetensors"
        data = bytearray(path.read_bytes())
        data[10] ^= 0xFF
        path.write_bytes(bytes(data))
        return str(path)
    if spec.backend == "sqlite":
        with sqlite3.connect(store.path) as connection:
            version, payload = connection.execute(
                "SELECT version, payload FROM sidecar_state_versions WHERE namespace = ? AND session_id = ? "
                "ORDER BY version DESC LIMIT 1",
                (spec.namespace, session_id),
            ).fetchone()
            data = bytearray(payload)
            data[-5] ^= 0xFF
            connection.execute(
                "UPDATE sidecar_state_versions SET payload = ? WHERE namespace = ? AND session_id = ? AND version = ?",
                (bytes(data), spec.namespace, session_id, version),
            )
        return f"sqlite:{store.path} table sidecar_state_versions"
    if spec.backend == "redis":
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        key = store.key(session_id)
        data = bytearray(client.hget(key, "payload"))
        data[-5] ^= 0xFF
        client.hset(key, "payload", bytes(data))
        client.close()
        return f"redis key '{key}'"
    if spec.backend == "postgres":
        import psycopg

        with psycopg.connect(POSTGRES_DSN, autocommit=True) as connection:
            connection.execute(
                "UPDATE sidecar_state_versions SET payload = overlay(payload placing '\\xff'::bytea from 3 for 1) "
                "WHERE namespace = %s AND session_id = %s AND version = "
                "(SELECT max(version) FROM sidecar_state_versions WHERE namespace = %s AND session_id = %s)",
                (spec.namespace, session_id, spec.namespace, session_id),
            )
        return "postgresql table sidecar_state_versions"
    raise ValueError(spec.backend)


def test_corrupt_state_detected(store_spec: StoreSpec, store: StateStore):
    store.save("nina", make_blob("good", 4096), expected_version=0)
    store.save("nina", make_blob("newer", 4096), expected_version=1)
    location = corrupt_current(store_spec, store, "nina")

    with pytest.raises(CorruptStateError) as caught:
        store.load("nina")

    assert location in str(caught.value)
    assert "nina" in str(caught.value)
    assert "sha256" in str(caught.value)
    assert "load_previous" in str(caught.value)
    assert caught.value.version == 2
    assert isinstance(caught.value, StateError)
    assert store.load_previous("nina") == StoredState(make_blob("good", 4096), 1)


def test_corrupt_state_restored_from_previous(store_spec: StoreSpec, store: StateStore):
    store.save("omar", make_blob("good"), expected_version=0)
    store.save("omar", make_blob("newer"), expected_version=1)
    corrupt_current(store_spec, store, "omar")

    with pytest.raises(CorruptStateError) as caught:
        store.load("omar")
    previous = store.load_previous("omar")
    restored_version = store.save("omar", previous.blob, expected_version=caught.value.version)

    assert restored_version == 3
    assert store.load("omar") == StoredState(make_blob("good"), 3)


def test_corrupt_manifest_detected(tmp_path: Path):
    store = DirectoryStore(tmp_path)
    store.save("pia", make_blob("a"), expected_version=0)
    manifest = sorted(store.session_dir("pia").glob("v*"))[-1] / ".manifest.json"
    manifest.write_bytes(b"{not json")

    with pytest.raises(CorruptStateError) as caught:
        store.load("pia")

    assert str(manifest) in str(caught.value)
    assert "not valid JSON" in str(caught.value)


def test_missing_file_detected(tmp_path: Path):
    store = DirectoryStore(tmp_path)
    store.save("quinn", make_blob("a"), expected_version=0)
    store.save("quinn", make_blob("b"), expected_version=1)
    version_dir = sorted(store.session_dir("quinn").glob("v*"))[-1]
    (version_dir / "state.json").unlink()

    with pytest.raises(CorruptStateError) as caught:
        store.load("quinn")

    assert "missing file 'state.json'" in str(caught.value)
    assert str(version_dir) in str(caught.value)
    assert store.load_previous("quinn") == StoredState(make_blob("a"), 1)


def test_newer_manifest_format_rejected(tmp_path: Path):
    store = DirectoryStore(tmp_path)
    store.save("rita", make_blob("a"), expected_version=0)
    manifest = sorted(store.session_dir("rita").glob("v*"))[-1] / ".manifest.json"
    manifest.write_bytes(b'{"format": 99, "files": []}')

    with pytest.raises(StateError, match="format 99"):
        store.load("rita")


# -- delete leaves nothing behind ---------------------------------------------


def test_delete_removes_everything(store_spec: StoreSpec, store: StateStore):
    session_id = f"secret-{uuid.uuid4().hex[:8]}"
    marker = f"private-{uuid.uuid4().hex}".encode()
    for i in range(3):
        store.save(session_id, StateBlob({"state.json": marker + str(i).encode()}), expected_version=i)
    store.save("bystander", make_blob("keep"), expected_version=0)

    assert store.delete(session_id) is True

    assert store.load(session_id) is None
    assert store.load_previous(session_id) is None
    assert store.list_sessions() == ["bystander"]
    assert store.load("bystander").blob == make_blob("keep")
    assert_nothing_left(store_spec, store, session_id, marker)


def assert_nothing_left(spec: StoreSpec, store: StateStore, session_id: str, marker: bytes) -> None:
    """Look behind the store's back for any trace of a deleted session."""
    if spec.backend == "directory":
        leftovers = [path for path in store.root.rglob("*") if session_id in str(path)]
        assert leftovers == []
        for path in store.root.rglob("*"):
            if path.is_file():
                assert marker not in path.read_bytes(), path
    elif spec.backend == "sqlite":
        with sqlite3.connect(store.path) as connection:
            for table in ("sidecar_state", "sidecar_state_versions"):
                rows = connection.execute(f"SELECT count(*) FROM {table} WHERE session_id = ?", (session_id,)).fetchone()
                assert rows == (0,), table
            rows = connection.execute(
                "SELECT count(*) FROM sidecar_state_versions WHERE instr(payload, ?) > 0", (marker,)
            ).fetchone()
            assert rows == (0,)
        store.close()
        for path in store.path.parent.glob(store.path.name + "*"):
            assert marker not in path.read_bytes(), path
    elif spec.backend == "redis":
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"*{session_id}*", count=1000))
        client.close()
        assert keys == []
    elif spec.backend == "postgres":
        import psycopg

        with psycopg.connect(POSTGRES_DSN, autocommit=True) as connection:
            sessions = connection.execute(
                "SELECT count(*) FROM sidecar_state WHERE session_id = %s", (session_id,)
            ).fetchone()
            versions = connection.execute(
                "SELECT count(*) FROM sidecar_state_versions WHERE session_id = %s OR position(%s in payload) > 0",
                (session_id, marker),
            ).fetchone()
        assert sessions == (0,)
        assert versions == (0,)


# -- connection errors and construction ---------------------------------------


def test_redis_unreachable_error():
    from sidecar_memory.stores import RedisStore

    store = RedisStore("redis://:hunter2@127.0.0.1:1/0", socket_timeout=2.0)

    with pytest.raises(StoreConnectionError) as caught:
        store.load("alice")

    assert "127.0.0.1:1" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert "running" in str(caught.value)


def test_postgres_unreachable_error():
    from sidecar_memory.stores import PostgresStore

    store = PostgresStore("postgresql://user:hunter2@127.0.0.1:1/test")

    with pytest.raises(StoreConnectionError) as caught:
        store.load("alice")

    assert "127.0.0.1:1" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert "running" in str(caught.value)


def test_redis_rejects_decoding_client():
    import redis

    from sidecar_memory.stores import RedisStore

    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    with pytest.raises(ValueError, match="decode_responses=False"):
        RedisStore(client=client)
    client.close()


def test_redis_accepts_client(tmp_path: Path):
    import redis

    from sidecar_memory.stores import RedisStore
    from test_stores_support import require_redis

    require_redis()
    client = redis.Redis.from_url(REDIS_URL)
    store = RedisStore(client=client, namespace=f"test-{uuid.uuid4().hex}")
    try:
        assert store.save("sam", make_blob("a"), expected_version=0) == 1
        assert asyncio.run(store.aload("sam")) == StoredState(make_blob("a"), 1)
    finally:
        store.delete("sam")
        client.close()


def test_postgres_custom_table():
    import psycopg

    from sidecar_memory.stores import PostgresStore
    from test_stores_support import require_postgres

    require_postgres()
    table = f"sidecar_test_{uuid.uuid4().hex[:12]}"
    store = PostgresStore(POSTGRES_DSN, table=table)
    try:
        store.save("tom", make_blob("a"), expected_version=0)
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as connection:
            sessions = connection.execute(f"SELECT session_id, version FROM {table}").fetchall()
            versions = connection.execute(f"SELECT session_id, version FROM {table}_versions").fetchall()
        assert sessions == [("tom", 1)]
        assert versions == [("tom", 1)]
    finally:
        store.close()
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as connection:
            connection.execute(f"DROP TABLE IF EXISTS {table}, {table}_versions")


@pytest.mark.parametrize("bad_table", ["drop table x", "1abc", "a;b", "", "x" * 55])
def test_sql_table_name_rejected(tmp_path: Path, bad_table: str):
    with pytest.raises(ValueError, match="invalid table name"):
        SQLiteStore(tmp_path / "x.db", table=bad_table)


def test_sqlite_rejects_memory_database():
    with pytest.raises(ValueError, match="needs a database file"):
        SQLiteStore(":memory:")


def test_open_store_schemes(tmp_path: Path):
    assert isinstance(open_store(str(tmp_path / "dir")), DirectoryStore)
    assert isinstance(open_store(f"file://{tmp_path}/dir2"), DirectoryStore)
    assert isinstance(open_store(f"sqlite://{tmp_path}/x.db"), SQLiteStore)
    assert type(open_store(REDIS_URL)).__name__ == "RedisStore"
    assert type(open_store(POSTGRES_DSN)).__name__ == "PostgresStore"
    with pytest.raises(ValueError, match="unsupported store URL"):
        open_store("ftp://example/x")


@pytest.mark.parametrize(("module", "name", "extra"), [("redis", "RedisStore", "redis"), ("psycopg", "PostgresStore", "postgres")])
def test_missing_client_package_error(module: str, name: str, extra: str):
    # A subprocess where importing the client package fails, as if it were not installed.
    code = (
        "import sys\n"
        f"sys.modules[{module!r}] = None\n"
        "import sidecar_memory.stores as stores\n"
        "stores.DirectoryStore\n"
        "try:\n"
        f"    getattr(stores, {name!r})\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    environment = {**os.environ, "PYTHONPATH": f"{REPO_ROOT / 'core'}{os.pathsep}{REPO_ROOT}"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=120)

    assert result.returncode == 0, result.stderr
    assert f'pip install "sidecar-memory[{extra}]"' in result.stdout


def stored_versions(spec: StoreSpec, store: StateStore, session_id: str) -> list[int]:
    """List the versions physically kept for a session, looking behind the store's back."""
    if spec.backend == "directory":
        return sorted(int(path.name[1:]) for path in store.session_dir(session_id).glob("v*"))
    if spec.backend == "sqlite":
        with sqlite3.connect(store.path) as connection:
            rows = connection.execute(
                "SELECT version FROM sidecar_state_versions WHERE namespace = ? AND session_id = ? ORDER BY version",
                (spec.namespace, session_id),
            ).fetchall()
        return [row[0] for row in rows]
    if spec.backend == "redis":
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        versions = client.hmget(store.key(session_id), ["previous_version", "version"])
        client.close()
        return [int(version) for version in versions if version is not None]
    if spec.backend == "postgres":
        import psycopg

        with psycopg.connect(POSTGRES_DSN, autocommit=True) as connection:
            rows = connection.execute(
                "SELECT version FROM sidecar_state_versions WHERE namespace = %s AND session_id = %s ORDER BY version",
                (spec.namespace, session_id),
            ).fetchall()
        return [row[0] for row in rows]
    raise ValueError(spec.backend)


def test_store_keeps_two_versions(store_spec: StoreSpec, store: StateStore):
    for i in range(6):
        store.save("uma", make_blob(f"v{i}"), expected_version=i)

    assert stored_versions(store_spec, store, "uma") == [5, 6]
