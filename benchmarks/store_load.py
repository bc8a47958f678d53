"""Load benchmark of the state stores: many users, each saving a state per turn.

Two measurements per backend:

* **store layer** (``--users`` x ``--turns``): each turn of each user is one
  load-then-save cycle (``aload`` + ``asave`` with the loaded version), which is what
  `SessionMemory` does around every observe. The engine does not run in the timed part.
  The saved blobs are real engine states computed beforehand: every user saves the
  state after turn ``t`` of one synthetic conversation at its turn ``t``. So the timings
  measure the store, its client and the network stack, not the model.
* **full path** (``--full-users`` x ``--full-turns``): `SessionMemory.observe` with the
  real model, i.e. load, parse, observe, serialise and compare-and-set save.

Run ``python -m benchmarks.store_load --help`` for the options. Every run writes into a
fresh namespace and deletes it afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger("benchmarks.store_load")

BACKENDS = ("directory", "sqlite", "redis", "postgres")
DEFAULT_BACKENDS = ("redis", "postgres")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_POSTGRES_DSN = "postgresql://127.0.0.1:5432/test"
TOPICS = ["hiking trip", "new job", "sister's wedding", "vegetarian diet", "broken bike", "piano lessons", "flat move"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.store_load",
        description="Measure throughput and latency of the state stores under many users.",
    )
    parser.add_argument("--users", type=_positive_int, default=1000, help="users in the store-layer run (default: 1000)")
    parser.add_argument("--turns", type=_positive_int, default=20, help="turns per user in the store-layer run (default: 20)")

    parser.add_argument(
        "--backends", type=_backend_list, default=DEFAULT_BACKENDS,
        help=f"backends to measure, comma-separated, from {','.join(BACKENDS)} (default: redis,postgres)",
    )
    parser.add_argument(
        "--concurrency", type=_positive_int, default=16,
        help="concurrent asyncio workers in the store-layer run; users are split between them (default: 16)",
    )

    parser.add_argument(
        "--full-users", type=int, default=4,
        help="users in the full observe+save run with the real model; 0 skips it (default: 4)",
    )
    parser.add_argument("--full-turns", type=int, default=5, help="turns per user in the full run (default: 5)")

    parser.add_argument(
        "--synthetic-blobs", action="store_true",
        help="save random bytes of the engine state's size instead of real engine states (no model load)",
    )
    parser.add_argument("--blob-bytes", type=_positive_int, default=None,
                        help="size in bytes of synthetic blobs; required with --synthetic-blobs")

    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help=f"Redis URL (default: {DEFAULT_REDIS_URL})")
    parser.add_argument("--postgres-dsn", default=DEFAULT_POSTGRES_DSN,
                        help=f"PostgreSQL connection string (default: {DEFAULT_POSTGRES_DSN})")

    parser.add_argument("--workdir", type=Path, default=None,
                        help="folder for the directory and SQLite stores (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON to this file")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and return the results (also printed, and written to ``--out`` if given)."""
    arguments = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import tempfile

    import torch

    torch.set_num_threads(1)
    workdir = arguments.workdir or Path(tempfile.mkdtemp(prefix="sidecar-store-load-"))

    model = tokenizer = None
    need_model = not arguments.synthetic_blobs or arguments.full_users > 0
    if need_model:
        from sidecar_memory import load_default_model

        model, tokenizer = load_default_model()
    blobs = _make_blobs(arguments, model, tokenizer)

    results: dict[str, Any] = {
        "command": "python -m benchmarks.store_load " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": _describe_machine(),
        "blob_source": "synthetic random bytes" if arguments.synthetic_blobs else "real engine states (precomputed)",
        "blob_bytes": blobs[-1].nbytes,
        "users": arguments.users,
        "turns": arguments.turns,
        "concurrency": arguments.concurrency,
        "backends": {},
    }
    for backend in arguments.backends:
        logger.info("store layer: %s, %d users x %d turns", backend, arguments.users, arguments.turns)
        entry = {"store_layer": asyncio.run(_run_store_layer(backend, arguments, workdir, blobs))}
        if arguments.full_users > 0 and arguments.full_turns > 0:
            logger.info("full path: %s, %d users x %d turns", backend, arguments.full_users, arguments.full_turns)
            entry["full_path"] = _run_full_path(backend, arguments, workdir, model, tokenizer)
        results["backends"][backend] = entry

    _print_table(results)
    if arguments.out is not None:
        arguments.out.parent.mkdir(parents=True, exist_ok=True)
        arguments.out.write_text(json.dumps(results, indent=2) + "\n")
        logger.info("wrote %s", arguments.out)
    return results


# -- blobs --------------------------------------------------------------------


def _make_blobs(arguments: argparse.Namespace, model: Any, tokenizer: Any) -> list:
    """Return one blob per turn: real engine states after turn 1..turns, or random bytes of that size."""
    from sidecar_memory import Sidecar, StateBlob

    if arguments.synthetic_blobs:
        size = arguments.blob_bytes
        if size is None:
            raise SystemExit("--synthetic-blobs needs --blob-bytes (or drop it to use real engine states)")
        return [StateBlob({"state.json": b"{}", "state.safetensors": os.urandom(size)}) for _ in range(arguments.turns)]
    sidecar = Sidecar(model, tokenizer)
    blobs = []
    for turn in range(arguments.turns):
        sidecar.observe(_turn_text(0, turn))
        blobs.append(sidecar.to_blob())
    return blobs


def _turn_text(user: int, turn: int) -> str:
    topic = TOPICS[(user + turn) % len(TOPICS)]
    return f"Turn {turn}: let me tell you about my {topic}; it happened on day {user % 28 + 1} and I loved it."


# -- stores -------------------------------------------------------------------


def _open_store(backend: str, arguments: argparse.Namespace, workdir: Path, namespace: str):
    from sidecar_memory.stores import DirectoryStore, SQLiteStore

    if backend == "directory":
        return DirectoryStore(workdir / "states", namespace=namespace)
    if backend == "sqlite":
        return SQLiteStore(workdir / "states.db", namespace=namespace)
    if backend == "redis":
        from sidecar_memory.stores import RedisStore

        return RedisStore(arguments.redis_url, namespace=namespace)
    if backend == "postgres":
        from sidecar_memory.stores import PostgresStore

        return PostgresStore(arguments.postgres_dsn, namespace=namespace)
    raise ValueError(f"unknown backend {backend!r}")


async def _run_store_layer(backend: str, arguments: argparse.Namespace, workdir: Path, blobs: list) -> dict[str, Any]:
    namespace = f"bench-{uuid.uuid4().hex[:12]}"
    store = _open_store(backend, arguments, workdir, namespace)
    users = [f"user-{index:05d}" for index in range(arguments.users)]
    workers = min(arguments.concurrency, len(users))
    shares = [users[index::workers] for index in range(workers)]
    cycle_seconds: list[float] = []
    load_seconds: list[float] = []
    save_seconds: list[float] = []

    async def worker(share: list[str]) -> None:
        # Turn-major order: every user of the share gets turn t before any gets turn t + 1.
        for turn in range(arguments.turns):
            for user in share:
                started = time.perf_counter()
                current = await store.aload(user)
                loaded = time.perf_counter()
                await store.asave(user, blobs[turn], expected_version=current.version if current else 0)
                finished = time.perf_counter()
                load_seconds.append(loaded - started)
                save_seconds.append(finished - loaded)
                cycle_seconds.append(finished - started)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker(share) for share in shares))
        elapsed = time.perf_counter() - started
    finally:
        leftovers = await _delete_namespace(store, users)
    cycles = len(cycle_seconds)
    return {
        "cycles": cycles,
        "sessions_left_after_cleanup": leftovers,
        "workers": workers,
        "seconds": round(elapsed, 3),
        "cycles_per_second": round(cycles / elapsed, 1),
        "megabytes_written_per_second": round(cycles * blobs[-1].nbytes / elapsed / 1e6, 1),
        "cycle_ms": _latency(cycle_seconds),
        "load_ms": _latency(load_seconds),
        "save_ms": _latency(save_seconds),
    }


async def _delete_namespace(store, users: list[str]) -> int:
    """Delete the benchmark's sessions; return how many sessions the namespace still lists."""
    for user in users:
        await store.adelete(user)
    leftovers = await store.alist_sessions()
    if leftovers:
        logger.warning("%d sessions left in namespace %s after cleanup", len(leftovers), store.namespace)
    await store.aclose()
    return len(leftovers)


def _run_full_path(backend: str, arguments: argparse.Namespace, workdir: Path, model: Any, tokenizer: Any) -> dict[str, Any]:
    from sidecar_memory.session import SessionMemory

    namespace = f"bench-{uuid.uuid4().hex[:12]}"
    store = _open_store(backend, arguments, workdir, namespace)
    users = [f"user-{index:05d}" for index in range(arguments.full_users)]
    memories = {user: SessionMemory(model, tokenizer, store, user) for user in users}
    seconds: list[float] = []
    try:
        started = time.perf_counter()
        for turn in range(arguments.full_turns):
            for index, user in enumerate(users):
                turn_started = time.perf_counter()
                memories[user].observe(_turn_text(index, turn))
                seconds.append(time.perf_counter() - turn_started)
        elapsed = time.perf_counter() - started
    finally:
        for user in users:
            store.delete(user)
        store.close()
    return {
        "turns": len(seconds),
        "seconds": round(elapsed, 3),
        "turns_per_second": round(len(seconds) / elapsed, 2),
        "turn_ms": _latency(seconds),
    }


# -- reporting ----------------------------------------------------------------


def _latency(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    if not ordered:
        return {}

    def percentile(q: float) -> float:
        position = (len(ordered) - 1) * q / 100
        low, high = int(position), min(int(position) + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    return {
        "mean": round(sum(ordered) / len(ordered) * 1000, 2),
        "p50": round(percentile(50) * 1000, 2),
        "p95": round(percentile(95) * 1000, 2),
        "p99": round(percentile(99) * 1000, 2),
        "max": round(ordered[-1] * 1000, 2),
    }


def _describe_machine() -> dict[str, Any]:
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "load_average": _load_average()}


def _load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def _print_table(results: dict[str, Any]) -> None:
    lines = [
        f"blobs: {results['blob_source']}, {results['blob_bytes']} bytes; "
        f"{results['users']} users x {results['turns']} turns, {results['concurrency']} workers",
        f"{'backend':<10} {'cycles/s':>9} {'MB/s':>7} {'cycle p50':>10} {'cycle p95':>10} "
        f"{'load p95':>9} {'save p95':>9} {'full turn p50':>14} {'full turn p95':>14}",
    ]
    for backend, entry in results["backends"].items():
        layer = entry["store_layer"]
        full = entry.get("full_path", {}).get("turn_ms", {})
        lines.append(
            f"{backend:<10} {layer['cycles_per_second']:>9.1f} {layer['megabytes_written_per_second']:>7.1f} "
            f"{layer['cycle_ms']['p50']:>8.1f}ms {layer['cycle_ms']['p95']:>8.1f}ms "
            f"{layer['load_ms']['p95']:>7.1f}ms {layer['save_ms']['p95']:>7.1f}ms "
            f"{_ms(full.get('p50')):>14} {_ms(full.get('p95')):>14}"
        )
    sys.stdout.write("\n".join(lines) + "\n")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}ms"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from error
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _backend_list(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [name for name in names if name not in BACKENDS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown backend(s) {unknown or text!r}; choose from {', '.join(BACKENDS)}")
    return names


if __name__ == "__main__":
    main()
