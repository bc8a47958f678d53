"""Fit the gate's information-score weights (SidecarConfig.s_weights) and report held-out AUROC.

Features per LoCoMo turn, computed the way the engine computes them:
log(1 + summed running IDF of content words), first-person words (at most 4),
whether the previous turn was a question, whether the turn is a question.
Fit on conversations 26 and 30; AUROC reported for every shared conversation.

Run from the repository root: ``.venv/bin/python -m benchmarks.studies.gate_fit``
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from sidecar_memory.cli import locomo_turns
from sidecar_memory.conflict import speaker_of
from sidecar_memory.encoder import DocumentFrequency, turn_terms
from sidecar_memory.gate import MAX_FIRST_PERSON, dialogue_cues

LOCOMO = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "locomo"
TRAIN = ("26", "30")
ALL = ("26", "30", "41", "42", "43", "44", "47")


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Rank-based AUROC (ties share their mean rank)."""
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores):
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    positives = labels.sum()
    negatives = len(labels) - positives
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def features(conversation: str) -> tuple[np.ndarray, np.ndarray]:
    document = json.loads((LOCOMO / f"conv-{conversation}.json").read_text())
    sessions = sorted((k for k in document if k.startswith("session_") and k.count("_") == 1
                       and isinstance(document[k], list)), key=lambda k: int(k.split("_")[1]))
    ids = [turn["dia_id"] for key in sessions for turn in document[key]]
    evidence = {e for q in document["qa"] if q.get("category") in (1, 2, 3, 4) for e in q.get("evidence", [])}
    frequency = DocumentFrequency()
    rows, previous_question = [], False
    for role, text in locomo_turns(document):
        terms = turn_terms(text)
        information = sum(frequency.weight(t) for t in terms)
        frequency.add(terms)
        cues = dialogue_cues(speaker_of(text, role)[1])
        rows.append([math.log1p(information), min(cues.first_person, MAX_FIRST_PERSON),
                     float(previous_question), float(cues.is_question)])
        previous_question = cues.is_question
    return np.array(rows), np.array([i in evidence for i in ids])


def main() -> None:
    data = {c: features(c) for c in ALL}
    x = np.vstack([data[c][0] for c in TRAIN])
    y = np.concatenate([data[c][1] for c in TRAIN])
    model = LogisticRegression(max_iter=1000).fit(x, y)
    print("s_weights", np.round(model.coef_[0], 3).tolist(), "s_bias", round(float(model.intercept_[0]), 3))
    for conversation in ALL:
        held_out = "" if conversation in TRAIN else " (held out)"
        score = auroc(model.decision_function(data[conversation][0]), data[conversation][1])
        print(f"conv {conversation}: AUROC {score:.3f}{held_out}")


if __name__ == "__main__":
    main()
