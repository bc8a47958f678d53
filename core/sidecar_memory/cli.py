"""The ``sidecar-memory`` command: demo, chat, replay, inspect and forget.

Every command that takes a state directory loads it before doing anything
and saves atomically at the end, so a failed run leaves the old state as it
was. Errors print one line naming the invalid value and the fix, and exit with
status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

from .errors import SidecarError
from .records import GateDecision

logger = logging.getLogger(__name__)

#: Maximum size, in bytes, of a transcript file that ``replay`` reads.
MAX_TRANSCRIPT_BYTES = 256 * 1024 * 1024
DEMO_COLORS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white", "pink"]

# The scripted conversation of the demo: (session, role, text).
DEMO_SCRIPT = (
    (1, "user", "Hi! How are you today?"),
    (1, "user", "The weather is fine, nothing special."),
    (1, "user", "My favorite color is blue."),
    (1, "user", "I'm planning to hike in Death Valley next week, it will be 120°F, is that dangerous?"),
    (1, "user", "Ok, thanks."),
    (2, "user", "Good morning again."),
    (2, "user", "I had toast for breakfast."),
    (2, "user", "Actually, my favorite color is green now, not blue anymore."),
    (2, "user", "Anyway, see you later."),
)
DEMO_QUESTION = "What is my favorite color? Answer with one word."


def _out(line: str = "") -> None:
    """Write one line of command output to stdout (the CLI's product, not a log)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _load_model(name: str | None) -> tuple[Any, Any]:
    from .model_loader import load_default_model, load_model

    return load_default_model() if name is None else load_model(name)


def _open_sidecar(args: argparse.Namespace, *, must_exist: bool) -> Any:
    from .sidecar import Sidecar

    state_dir = Path(args.state)
    if must_exist and not (state_dir / "state.json").is_file():
        raise SidecarError(f"no saved state in {str(state_dir)!r}; pass a directory written by 'replay', 'chat' or 'demo'")
    if state_dir.exists() and not state_dir.is_dir():
        raise SidecarError(f"--state {str(state_dir)!r} is a file; pass a directory")
    if state_dir.is_dir() and any(state_dir.iterdir()) and not (state_dir / "state.json").is_file():
        raise SidecarError(
            f"{str(state_dir)!r} is not empty and contains no state.json; pass an empty directory or a state directory"
        )
    model, tokenizer = _load_model(getattr(args, "model", None))
    overrides = {"rank": args.rank} if getattr(args, "rank", None) is not None else {}
    sidecar = Sidecar(model, tokenizer, **overrides)
    if (state_dir / "state.json").is_file():
        sidecar.load_state(state_dir)
    return sidecar


def _decision_header() -> str:
    return f"{'turn':>4} {'S':>5} {'N':>5} {'A':>5} {'C':>5} {'R':>5} {'G':>5} {'tau':>5} {'commit':>6} {'slot':>4}  text / reason"


def _decision_row(d: GateDecision) -> str:
    slot = "-" if d.slot is None else str(d.slot)
    text = d.text if len(d.text) <= 60 else d.text[:57] + "..."
    return (f"{d.turn:>4} {d.S:5.2f} {d.N:5.2f} {d.A:5.2f} {d.C:5.2f} {d.R:5.2f} {d.G:5.2f} {d.tau:5.2f} "
            f"{'yes' if d.committed else 'no':>6} {slot:>4}  {text}  [{d.reason}]")


# ---------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    from .sidecar import Sidecar

    state_dir = Path(args.state) if args.state else Path(os.environ.get("TMPDIR", "/tmp")) / "sidecar-demo-state"
    model, tokenizer = _load_model(args.model)
    sidecar = Sidecar(model, tokenizer)
    _out("sidecar-memory demo: a two-session conversation through the gate")
    _out(_decision_header())
    session = 0
    for number, role, text in DEMO_SCRIPT:
        if number != session:
            session = number
            _out(f"--- session {session} ---")
        _out(_decision_row(sidecar.observe(text, role)))
    sidecar.save_state(state_dir)
    stats = sidecar.stats
    _out(f"saved state to {state_dir}: {stats['commits']} commits in {stats['turns']} turns, "
         f"{sidecar.state_nbytes()} bytes")
    _out("starting a new process that loads the state and answers ...")
    command = [sys.executable, "-m", "sidecar_memory.cli", "answer", "--state", str(state_dir), DEMO_QUESTION,
               "--allowed-words", ",".join(DEMO_COLORS)]
    if args.model:
        command += ["--model", args.model]
    return subprocess.call(command)


def cmd_answer(args: argparse.Namespace) -> int:
    sidecar = _open_sidecar(args, must_exist=True)
    recalled = sidecar.recall(args.question, k=args.k)
    # A 135M model responds correctly from a plain statement of the fact far more reliably
    # than from the turn that stated it, so facts go in when memory has them.
    mem_text = recalled.facts_text() or recalled.as_text()
    allowed = [w for w in args.allowed_words.split(",") if w.strip()] if args.allowed_words else None
    answer = sidecar.generate_kv(mem_text, args.question, max_new_tokens=args.max_new_tokens,
                                 stop_on_newline=True, allowed_words=allowed)
    _out(f"[new process {os.getpid()}] loaded {args.state}")
    _out(f"memory text injected into the KV cache:\n{mem_text}")
    _out(f"Q: {args.question}")
    _out(f"A: {answer}")
    return 0


# ---------------------------------------------------------------- chat
def cmd_chat(args: argparse.Namespace) -> int:
    sidecar = _open_sidecar(args, must_exist=False)
    _out("type a message; an empty line or Ctrl-D ends the chat")
    for line in sys.stdin:
        text = line.strip()
        if not text:
            break
        decision = sidecar.observe(text, "user")
        _out(_decision_header())
        _out(_decision_row(decision))
        reply = sidecar.generate(text, max_new_tokens=args.max_new_tokens, observe=False)
        _out(f"assistant: {reply}")
        # Replies are not observed: the memory is about the user, and a small
        # model's replies would fill slots with its own guesses.
        sidecar.save_state(args.state)
    sidecar.save_state(args.state)
    return 0


# ---------------------------------------------------------------- replay
def read_transcript(path: Path) -> list[tuple[str, str]]:
    """Read ``(role, text)`` turns from JSONL or a LoCoMo conversation file."""
    if path.is_dir():
        raise SidecarError(f"transcript {str(path)!r} is a directory; pass a .jsonl file or a LoCoMo conversation .json")
    if not path.is_file():
        raise SidecarError(f"transcript {str(path)!r} not found; pass a .jsonl file or a LoCoMo conversation .json")
    if path.suffix not in (".jsonl", ".json"):
        raise SidecarError(f"unsupported transcript type {path.suffix!r} for {str(path)!r}; pass a .jsonl or .json file")
    size = path.stat().st_size
    if size > MAX_TRANSCRIPT_BYTES:
        raise SidecarError(
            f"transcript {str(path)!r} has {size} bytes, over the {MAX_TRANSCRIPT_BYTES}-byte limit; split it into smaller files"
        )
    try:
        raw = path.read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError as error:
        raise SidecarError(f"transcript {str(path)!r} is not UTF-8 text ({error.reason} at byte {error.start}); "
                           "convert it to UTF-8") from error
    if path.suffix == ".jsonl":
        turns = list(_jsonl_turns(raw, path))
        if not turns:
            raise SidecarError(f"transcript {str(path)!r} contains no turns; add lines of {{\"role\", \"text\"}}")
        return turns
    try:
        document = json.loads(raw)
    except json.JSONDecodeError as error:
        raise SidecarError(f"{str(path)!r} is not valid JSON ({error}); pass JSONL of {{role, text}} or a LoCoMo file") from error
    if isinstance(document, dict) and any(k.startswith("session_") for k in document):
        turns = locomo_turns(document, where=str(path))
        if not turns:
            raise SidecarError(f"LoCoMo file {str(path)!r} contains no turns in its session_<n> lists")
        return turns
    raise SidecarError(f"unknown transcript format in {str(path)!r}; pass JSONL of {{\"role\", \"text\"}} lines or a LoCoMo conversation file")


def _jsonl_turns(raw: str, path: Path) -> Iterator[tuple[str, str]]:
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise SidecarError(
                f"{str(path)!r} line {number} is not valid JSON ({error}); each line must be {{\"role\", \"text\"}}"
            ) from error
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise SidecarError(
                f"{str(path)!r} line {number} is missing a string 'text' field; each line must be {{\"role\", \"text\"}}"
            )
        yield str(record.get("role", "user")), record["text"]


def locomo_turns(document: dict, *, where: str = "LoCoMo document") -> list[tuple[str, str]]:
    """Flatten a LoCoMo conversation into ``("user", "Speaker: text")`` turns in session order."""
    sessions = []
    for key, value in document.items():
        parts = key.split("_")
        if len(parts) != 2 or parts[0] != "session" or not parts[1].isdigit():
            continue
        if not isinstance(value, list):
            raise SidecarError(f"{where}: {key} must be a list of turns; got {type(value).__name__}")
        sessions.append((int(parts[1]), key, value))
    turns = []
    for _, key, session in sorted(sessions):
        for index, turn in enumerate(session):
            if not isinstance(turn, dict) or not isinstance(turn.get("text"), str):
                raise SidecarError(f"{where}: {key}[{index}] must be an object with a string 'text' field")
            text = turn["text"]
            if turn.get("blip_caption"):
                text = f"{text} [shares a photo of {turn['blip_caption']}]"
            turns.append(("user", f"{turn.get('speaker', 'user')}: {text}"))
    return turns


def cmd_replay(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    turns = read_transcript(Path(args.file))
    sidecar = _open_sidecar(args, must_exist=False)
    skipped = 0
    for role, text in tqdm(turns, desc="replay", unit="turn", file=sys.stderr):
        if not text.strip():
            skipped += 1
            continue
        sidecar.observe(text, role)
    sidecar.save_state(args.state)
    stats = sidecar.stats
    _out(f"turns: {stats['turns']}  commits: {stats['commits']}  slots used: {stats['slots_used']}/{stats['rank']}  "
         f"state bytes: {sidecar.state_nbytes()}  skipped empty turns: {skipped}")
    return 0


# ---------------------------------------------------------------- inspect / forget
def cmd_inspect(args: argparse.Namespace) -> int:
    sidecar = _open_sidecar(args, must_exist=True)
    stats = sidecar.stats
    _out(f"turns {stats['turns']}, commits {stats['commits']}, slots {stats['slots_used']}/{stats['rank']}, "
         f"gate mean {stats['gate_mean']:.3f} std {stats['gate_std']:.3f} tau {stats['tau']:.3f}")
    _out(f"{'slot':>4} {'strength':>8} {'age':>5}  text")
    for item in sidecar.slots():
        age = stats["turns"] - item.turn
        _out(f"{item.slot:>4} {item.strength:8.4f} {age:>5}  {item.text[:90]}")
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    if not args.all and not args.query:
        raise SidecarError("forget requires --query TEXT or --all; got neither")
    sidecar = _open_sidecar(args, must_exist=True)
    cleared = sidecar.forget(query=args.query, all=args.all)
    sidecar.save_state(args.state)
    _out(f"cleared {cleared} slot(s) in {args.state}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sidecar-memory", description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true", help="log engine details to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    def add_model(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", default=None, help="model folder or id (default: embedded SmolLM2-135M-Instruct)")

    p = sub.add_parser("demo", help="run the scripted two-session demo on the embedded model")
    p.add_argument("--state", default=None, help="directory for the demo state (default: $TMPDIR/sidecar-demo-state)")
    add_model(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("answer", help="load a state in this process and answer one question through generate_kv")
    p.add_argument("question")
    p.add_argument("--state", required=True, help="state directory to load")
    p.add_argument("--k", type=int, default=3, help="number of memories to inject (default 3)")
    p.add_argument("--allowed-words", default=None, help="comma-separated words the answer may use")
    p.add_argument("--max-new-tokens", type=int, default=8, help="maximum number of tokens to decode (default 8)")
    add_model(p)
    p.set_defaults(func=cmd_answer)

    p = sub.add_parser("chat", help="interactive chat that shows each gate decision")
    p.add_argument("--state", required=True, help="state directory (created if missing)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="maximum reply length in tokens (default 64)")
    add_model(p)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("replay", help="feed a transcript (JSONL or LoCoMo JSON) through the gate")
    p.add_argument("file", help="JSONL of {role, text} lines, or a LoCoMo conversation .json")
    p.add_argument("--state", required=True, help="state directory (created if missing, continued if present)")
    p.add_argument("--rank", type=int, default=None, help="number of slots of a new state (default: SidecarConfig.rank)")
    add_model(p)
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("inspect", help="show slots, strengths, ages and gate statistics")
    p.add_argument("state", help="state directory")
    add_model(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("forget", help="clear slots by query, or everything")
    p.add_argument("state", help="state directory")
    p.add_argument("--query", default=None, help="clear slots matching this text")
    p.add_argument("--all", action="store_true", help="clear the whole memory")
    add_model(p)
    p.set_defaults(func=cmd_forget)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (SidecarError, UnicodeDecodeError, OSError) as error:
        sys.stderr.write(f"sidecar-memory {args.command}: error: {error}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
