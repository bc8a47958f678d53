"""Loader for LoCoMo conversations: turns with their dia_id and the answerable questions."""

import json
import re
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_LOCOMO_DIR = REPO_ROOT.parent / "shared" / "data" / "locomo"
DEFAULT_CONVERSATIONS = (26, 30, 41)
# Categories 1-4 (multi-hop, temporal, open-domain, single-hop) have evidence turns.
# Category 5 questions are adversarial and have no answer in the conversation.
ANSWERABLE_CATEGORIES = (1, 2, 3, 4)

_SESSION_KEY = re.compile(r"session_(\d+)")
# Most evidence entries are one dia_id, but a few pack several into one string ("D8:6; D9:17").
_EVIDENCE_SPLIT = re.compile(r"[;,\s]+")


@dataclass(frozen=True)
class Turn:
    """One dialogue turn. ``text`` is what memories observe: "Speaker: text" plus any photo caption."""

    dia_id: str
    speaker: str
    text: str
    session: int


@dataclass(frozen=True)
class Question:
    """One answerable question with the dia_ids of the turns that hold its answer."""

    question: str
    answer: str
    evidence: tuple[str, ...]
    category: int


@dataclass(frozen=True)
class Conversation:
    conv_id: int
    turns: tuple[Turn, ...]
    questions: tuple[Question, ...]


def format_turn(speaker: str, text: str, caption: str | None) -> str:
    """Render a turn as the text every memory observes."""
    rendered = f"{speaker}: {text}"
    if caption:
        rendered += f" [photo: {caption}]"
    return rendered


def load_conversation(conv_id: int, data_dir: Path | None = None) -> Conversation:
    """Load ``conv-<conv_id>.json`` from ``data_dir`` (default: ``<repo>/../shared/data/locomo``).

    Questions outside categories 1-4 and questions without evidence are dropped.
    Evidence ids that name no turn of the conversation are kept, so they count as missed.
    """
    directory = Path(data_dir) if data_dir is not None else DEFAULT_LOCOMO_DIR
    path = directory / f"conv-{conv_id}.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"LoCoMo conversation {conv_id} not found at {path}; "
            f"pass --locomo-dir with the folder that holds conv-{conv_id}.json"
        )
    data = json.loads(path.read_text(encoding="utf-8"))

    sessions = []
    for key in data:
        match = _SESSION_KEY.fullmatch(key)
        if match:
            sessions.append((int(match.group(1)), key))
    sessions.sort()

    turns = []
    for session_index, key in sessions:
        for raw in data[key]:
            text = format_turn(raw["speaker"], raw["text"], raw.get("blip_caption"))
            turns.append(Turn(raw["dia_id"], raw["speaker"], text, session_index))

    questions = []
    for qa in data.get("qa", []):
        if qa.get("category") not in ANSWERABLE_CATEGORIES:
            continue
        evidence = []
        for entry in qa.get("evidence", []):
            evidence.extend(part for part in _EVIDENCE_SPLIT.split(entry) if part)
        if not evidence:
            continue
        questions.append(
            Question(qa["question"], str(qa.get("answer", "")), tuple(dict.fromkeys(evidence)), qa["category"])
        )
    return Conversation(conv_id, tuple(turns), tuple(questions))
