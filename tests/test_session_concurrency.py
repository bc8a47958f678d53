"""Eight processes observe turns for one user at once through SessionMemory: no commit is lost.

Each process observes 50 turns with the real model and reports how many of its saved
turns the gate committed. The stored state must count every turn and exactly the sum
of the reported commits. The children are forked from the test process, so they share
its loaded model; each opens its own store connection.
"""

from __future__ import annotations

import multiprocessing

import pytest
import torch
from test_stores_support import StoreSpec, store, store_spec  # noqa: F401

from sidecar_memory.session import SessionMemory
from sidecar_memory.stores import RetryPolicy, StateStore

FORK = multiprocessing.get_context("fork")
WORKERS = 8
TURNS_PER_WORKER = 50
ATTRIBUTES = ["favourite colour", "home town", "first pet", "job", "car", "team", "band", "sport", "dish", "book"]
VALUES = ["teal", "Oslo", "a hamster", "nurse", "a red Volvo", "Arsenal", "Blur", "rowing", "ramen", "Dune", "Leeds"]


def turn_text(worker: int, index: int) -> str:
    attribute = ATTRIBUTES[(worker + index) % len(ATTRIBUTES)]
    value = VALUES[(worker * 7 + index) % len(VALUES)]
    return f"Note {index} from agent {worker}: my {attribute} is {value}, remember that."


def observe_turns(model, tokenizer, spec: StoreSpec, worker: int, results) -> None:
    """Child: observe TURNS_PER_WORKER turns for the shared user; report turns and commits saved."""
    torch.set_num_threads(1)
    store = spec.open()
    # Generous attempts: eight writers on two cores lose many races while one observes.
    memory = SessionMemory(
        model, tokenizer, store, "shared-user", retry=RetryPolicy(max_attempts=500, base_delay=0.01, max_delay=1.0)
    )
    commits = 0
    for index in range(TURNS_PER_WORKER):
        decision = memory.observe(turn_text(worker, index))
        commits += int(decision.committed)
    store.close()
    results.put((worker, TURNS_PER_WORKER, commits))


@pytest.mark.slow
def test_session_concurrent_workers_lose_no_commit(model_and_tokenizer, store_spec: StoreSpec, store: StateStore):
    model, tokenizer = model_and_tokenizer
    results = FORK.Queue()
    workers = [
        FORK.Process(target=observe_turns, args=(model, tokenizer, store_spec, worker, results))
        for worker in range(WORKERS)
    ]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=1800)
    reported = [results.get(timeout=10) for process in workers if process.exitcode == 0]

    memory = SessionMemory(model, tokenizer, store, "shared-user")
    stats = memory.stats

    assert [process.exitcode for process in workers] == [0] * WORKERS
    assert sum(turns for _, turns, _ in reported) == WORKERS * TURNS_PER_WORKER
    assert stats["turns"] == WORKERS * TURNS_PER_WORKER
    assert stats["version"] == WORKERS * TURNS_PER_WORKER
    assert stats["commits"] == sum(commits for _, _, commits in reported)
    assert stats["commits"] > 0, "no turn was committed, so the commit count proves nothing"
