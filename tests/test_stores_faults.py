"""Concurrency and crash-safety tests of every store, with real processes.

Lost updates: 8 processes each apply 50 read-modify-write updates to one session through
`StateStore.update`; every update must land exactly once.

Crash safety: a child process saves in a loop and is killed with SIGKILL at a random
moment, 50 times per backend. After each kill the latest state must load and pass its
checksums. It must be at least as new as the last save the child saw succeed, and the
previous version must load too.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

from test_stores_support import StoreSpec, store, store_spec  # noqa: F401

from sidecar_memory.stores import RetryPolicy, StateBlob, StateStore, StoredState, read_files, write_files_atomically

# fork starts a child in milliseconds and shares the already imported modules; the
# children open their own store connections.
FORK = multiprocessing.get_context("fork")
WORKERS = 8
UPDATES_PER_WORKER = 50
KILLS = 50


# -- lost updates -------------------------------------------------------------


def append_updates(spec: StoreSpec, session_id: str, worker: int, updates: int, results) -> None:
    """Child: append ``updates`` entries to the session's JSON list; report how many saves succeeded."""
    store = spec.open()
    policy = RetryPolicy(max_attempts=1000, base_delay=0.002, max_delay=0.05)
    succeeded = 0
    for index in range(updates):

        def apply(current: StoredState | None, index: int = index) -> StateBlob:
            entries = json.loads(current.blob.files["entries.json"]) if current else []
            entries.append([worker, index])
            return StateBlob({"entries.json": json.dumps(entries).encode()})

        store.update(session_id, apply, retry=policy)
        succeeded += 1
    store.close()
    results.put((worker, succeeded))


def test_store_concurrent_updates_lose_nothing(store_spec: StoreSpec, store: StateStore):
    results = FORK.Queue()
    workers = [
        FORK.Process(target=append_updates, args=(store_spec, "shared-user", worker, UPDATES_PER_WORKER, results))
        for worker in range(WORKERS)
    ]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=600)
    reported = dict(results.get(timeout=10) for process in workers if process.exitcode == 0)

    final = store.load("shared-user")
    entries = json.loads(final.blob.files["entries.json"])

    assert [process.exitcode for process in workers] == [0] * WORKERS
    assert sum(reported.values()) == WORKERS * UPDATES_PER_WORKER
    assert final.version == sum(reported.values())
    assert len(entries) == sum(reported.values())
    assert sorted(map(tuple, entries)) == [(w, i) for w in range(WORKERS) for i in range(UPDATES_PER_WORKER)]
    for worker in range(WORKERS):
        own = [index for entry_worker, index in entries if entry_worker == worker]
        assert own == list(range(UPDATES_PER_WORKER)), f"worker {worker} entries out of order"


# -- crash safety -------------------------------------------------------------


def blob_for_version(version: int) -> StateBlob:
    """A ~600 kB blob whose content is a function of ``version``, so a load can be checked exactly."""
    rng = random.Random(version)
    tensors = rng.randbytes(600_000)
    document = json.dumps({"schema_version": 1, "version": version}).encode()
    return StateBlob({"state.json": document, "state.safetensors": tensors})


def save_forever(spec: StoreSpec, session_id: str, acknowledged) -> None:
    """Child: save successive versions until killed; ``acknowledged`` contains the last version saved."""
    store = spec.open()
    current = store.load(session_id)
    version = current.version if current else 0
    while True:
        version = store.save(session_id, blob_for_version(version + 1), expected_version=version)
        acknowledged.value = version


def kill_during_saves(target, args: tuple, acknowledged, rng: random.Random) -> int:
    """Start a saving child, wait for its first save, SIGKILL it after a random delay; return saves seen."""
    start = acknowledged.value
    process = FORK.Process(target=target, args=args)
    process.start()
    deadline = time.monotonic() + 60
    while acknowledged.value == start:
        assert process.is_alive(), f"saving child exited early with code {process.exitcode}"
        assert time.monotonic() < deadline, "saving child made no save within 60 s"
        time.sleep(0.001)
    time.sleep(rng.uniform(0.0, 0.05))
    os.kill(process.pid, signal.SIGKILL)
    process.join(timeout=30)
    assert process.exitcode == -signal.SIGKILL
    return acknowledged.value - start


def wait_until_settled(store: StateStore, session_id: str) -> None:
    """Wait until the stored version stops changing.

    A Redis or PostgreSQL server may still run a save that a killed client had already
    sent, so the version can move once after the kill.
    """
    last_version = -1
    for _ in range(200):
        state = store.load(session_id)
        version = state.version if state else 0
        if version == last_version:
            return
        last_version = version
        time.sleep(0.02)
    raise AssertionError(f"version of {session_id!r} still changing after the writer was killed")


def test_store_survives_sigkill_during_save(store_spec: StoreSpec, store: StateStore):
    rng = random.Random(1234)
    acknowledged = FORK.RawValue("q", 0)
    for kill in range(KILLS):
        kill_during_saves(save_forever, (store_spec, "crashy", acknowledged), acknowledged, rng)
        wait_until_settled(store, "crashy")

        state = store.load("crashy")
        previous = store.load_previous("crashy")

        assert state is not None, f"kill {kill}: nothing loadable"
        assert state.version >= acknowledged.value, f"kill {kill}: acknowledged save {acknowledged.value} lost"
        assert state.version <= acknowledged.value + 1, f"kill {kill}: version ahead of the writer"
        assert state.blob == blob_for_version(state.version), f"kill {kill}: content does not match version"
        if state.version > 1:
            assert previous.version == state.version - 1
            assert previous.blob == blob_for_version(previous.version), f"kill {kill}: backup does not match"
        acknowledged.value = state.version

    assert acknowledged.value >= KILLS


def test_directory_store_cleans_interrupted_saves(tmp_path: Path):
    spec = StoreSpec("directory", str(tmp_path), "crash-cleanup")
    acknowledged = FORK.RawValue("q", 0)
    rng = random.Random(99)
    for _ in range(10):
        kill_during_saves(save_forever, (spec, "crashy", acknowledged), acknowledged, rng)
        acknowledged.value = spec.open().load("crashy").version

    store = spec.open()
    store.save("crashy", blob_for_version(acknowledged.value + 1), expected_version=acknowledged.value)
    entries = sorted(path.name for path in store.session_dir("crashy").iterdir())

    assert len(entries) == 3, entries
    assert entries[0] == "lock"
    assert all(name.startswith("v") for name in entries[1:])


def write_directory_forever(directory: str, acknowledged) -> None:
    """Child: rewrite one state directory with `write_files_atomically` until killed."""
    version = acknowledged.value
    while True:
        version += 1
        write_files_atomically(directory, blob_for_version(version).files)
        acknowledged.value = version


def test_write_files_atomically_survives_sigkill(tmp_path: Path):
    rng = random.Random(4321)
    target = tmp_path / "memory"
    acknowledged = FORK.RawValue("q", 0)
    for kill in range(KILLS):
        kill_during_saves(write_directory_forever, (str(target), acknowledged), acknowledged, rng)

        files = read_files(target)
        version = json.loads(files["state.json"])["version"]

        assert set(files) == {"state.json", "state.safetensors"}, f"kill {kill}: files {sorted(files)}"
        assert version in (acknowledged.value, acknowledged.value + 1), f"kill {kill}: version {version}"
        assert StateBlob(files) == blob_for_version(version), f"kill {kill}: files from different versions"
        acknowledged.value = version
