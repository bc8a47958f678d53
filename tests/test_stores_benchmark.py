"""A tiny run of the store load benchmark, so that it cannot rot unnoticed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_stores_support import require_postgres, require_redis

from benchmarks import store_load


def test_store_load_tiny_run(tmp_path: Path):
    require_redis()
    require_postgres()
    out = tmp_path / "store_load.json"

    results = store_load.main([
        "--users", "3", "--turns", "2", "--backends", "directory,sqlite,redis,postgres",
        "--concurrency", "2", "--synthetic-blobs", "--blob-bytes", "5000", "--full-users", "0",
        "--workdir", str(tmp_path / "work"), "--out", str(out),
    ])

    assert json.loads(out.read_text()) == results
    assert results["blob_bytes"] == 5002
    assert set(results["backends"]) == {"directory", "sqlite", "redis", "postgres"}
    for backend, entry in results["backends"].items():
        layer = entry["store_layer"]
        assert layer["cycles"] == 6, backend
        assert layer["sessions_left_after_cleanup"] == 0, backend
        assert layer["cycle_ms"]["p95"] >= layer["cycle_ms"]["p50"] > 0
        assert "full_path" not in entry


def test_store_load_full_path_tiny_run(tmp_path: Path):
    results = store_load.main([
        "--users", "2", "--turns", "2", "--backends", "sqlite", "--full-users", "1", "--full-turns", "2",
        "--workdir", str(tmp_path / "work"),
    ])

    entry = results["backends"]["sqlite"]
    assert results["blob_source"] == "real engine states (precomputed)"
    assert results["blob_bytes"] > 100_000
    assert entry["store_layer"]["cycles"] == 4
    assert entry["full_path"]["turns"] == 2
    assert entry["full_path"]["turn_ms"]["p50"] > 0


@pytest.mark.parametrize("argv", [["--users", "0"], ["--backends", "mongodb"], ["--turns", "x"]])
def test_store_load_rejects_bad_options(argv: list[str]):
    with pytest.raises(SystemExit):
        store_load.build_parser().parse_args(argv)
