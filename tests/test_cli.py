"""The sidecar-memory command on the real embedded model, including bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sidecar_memory.cli import main


def run_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sidecar_memory.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "TMPDIR": os.environ.get("TMPDIR", "/tmp")})


def test_demo_answers_changed_preference(tmp_path):
    result = run_cli("demo", "--state", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stderr
    assert "conflict: replaced slot" in result.stdout
    assert "arousal: " in result.stdout
    answer = [line for line in result.stdout.splitlines() if line.startswith("A: ")]
    assert answer == ["A: Green"]


def test_replay_inspect_forget(tmp_path, locomo_dir, capsys):
    state = tmp_path / "state"
    assert main(["replay", str(locomo_dir / "conv-26.json"), "--state", str(state), "--rank", "32"]) == 0
    summary = capsys.readouterr().out
    assert "turns: 419" in summary
    assert "slots used: 32/32" in summary
    assert main(["inspect", str(state)]) == 0
    assert "slots 32/32" in capsys.readouterr().out
    assert main(["forget", str(state), "--all"]) == 0
    assert "cleared 32 slot(s)" in capsys.readouterr().out


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


BAD_TRANSCRIPTS = [
    ("empty.jsonl", b"", "contains no turns"),
    ("notext.jsonl", b'{"role": "user"}\n', "string 'text' field"),
    ("binary.jsonl", b"\xff\xfe\x00bad", "not UTF-8"),
    ("notes.txt", b"hello", "unsupported transcript type"),
    ("badsession.json", json.dumps({"session_1": "x"}).encode(), "must be a list"),
    ("badturn.json", json.dumps({"session_1": ["x"]}).encode(), "string 'text' field"),
    ("other.json", json.dumps({"a": 1}).encode(), "unknown transcript format"),
]


@pytest.mark.parametrize("name, data, message", BAD_TRANSCRIPTS, ids=[case[0] for case in BAD_TRANSCRIPTS])
def test_replay_bad_transcript(tmp_path, capsys, name, data, message):
    transcript = write(tmp_path / name, data)
    assert main(["replay", str(transcript), "--state", str(tmp_path / "state")]) == 2
    error = capsys.readouterr().err
    assert message in error
    assert len(error.strip().splitlines()) == 1
    assert not (tmp_path / "state").exists()


def test_bad_input_keeps_existing_state(tmp_path, capsys):
    state = tmp_path / "state"
    good = write(tmp_path / "good.jsonl", b'{"role": "user", "text": "My favorite color is teal."}\n')
    assert main(["replay", str(good), "--state", str(state)]) == 0
    before = {p.name: p.read_bytes() for p in state.iterdir()}
    assert main(["replay", str(write(tmp_path / "e.jsonl", b"")), "--state", str(state)]) == 2
    assert main(["replay", str(good), "--state", str(state), "--rank", "0"]) == 2
    assert {p.name: p.read_bytes() for p in state.iterdir()} == before


def test_inspect_missing_state(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "missing")]) == 2
    assert "no saved state" in capsys.readouterr().err


def test_forget_scrubs_bound_context(model_and_tokenizer):
    from sidecar_memory import Sidecar

    model, tokenizer = model_and_tokenizer
    sidecar = Sidecar(model, tokenizer, fixed_tau=1.2)
    sidecar.observe("My locker code is 4471.")
    sidecar.observe("Remember this: the gym closes at 9 pm on Sundays.")
    assert any("4471" in m.context for m in sidecar.slots())
    sidecar.forget(query="4471")
    assert not any("4471" in m.text or "4471" in m.context for m in sidecar.slots())


def test_chat_commits_only_user_turns(tmp_path, monkeypatch, capsys):
    import io

    state = tmp_path / "chat"
    monkeypatch.setattr(sys, "stdin", io.StringIO("Remember this: my locker code is 4471.\n\n"))
    assert main(["chat", "--state", str(state), "--max-new-tokens", "8"]) == 0
    assert "assistant: " in capsys.readouterr().out
    assert main(["inspect", str(state)]) == 0
    listing = capsys.readouterr().out
    assert "turns 1," in listing
    assert "4471" in listing
