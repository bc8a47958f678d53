"""Shared helpers for the key-encoder and gate-feature studies on LoCoMo."""

import json
import re
import zlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
LOCOMO_DIR = REPO.parent / "shared" / "data" / "locomo"
CACHE_DIR = Path("/tmp/study_cache")
EVAL_CONVS = (26, 30, 41)
# Held-out conversation used for every fixed constant (IDF table, mean vector, PC1, z-score stats).
REF_CONV = 42

STOPWORDS = frozenset(
    """a an the and or but if then so of to in on at by for with from as is are was were be been being am
    i me my mine we us our you your yours he him his she her hers it its they them their this that these those
    do does did doing have has had having will would can could should shall may might must not no yes
    what which who whom whose when where why how all any some each both more most other such own same than too
    very just also only about into over after before up down out off again there here once s t don im ive
    oh hey hi yeah wow whats really like got get gets thats its youre dont ll re ve d m""".split()
)
WORD_RE = re.compile(r"[a-z0-9]+")


def load_conversation(conv_id):
    """Load one LoCoMo conversation as (turns, questions).

    turns: list of dicts with dia_id, speaker, text (with photo caption), session index.
    questions: category 1-4 questions as dicts with question, evidence (list of dia_id), category.
    """
    path = LOCOMO_DIR / f"conv-{conv_id}.json"
    data = json.loads(path.read_text())
    session_keys = [key for key in data if re.fullmatch(r"session_\d+", key)]
    session_keys.sort(key=lambda key: int(key.split("_")[1]))
    turns = []
    for key in session_keys:
        for turn in data[key]:
            text = f"{turn['speaker']}: {turn['text']}"
            caption = turn.get("blip_caption")
            if caption:
                text += f" [shares a photo of {caption}]"
            turns.append(
                {
                    "dia_id": turn["dia_id"],
                    "speaker": turn["speaker"],
                    "raw": turn["text"],
                    "text": text,
                    "has_photo": bool(caption),
                    "session": int(key.split("_")[1]),
                }
            )
    questions = [
        {"question": qa["question"], "evidence": list(qa["evidence"]), "category": qa["category"]}
        for qa in data["qa"]
        if qa["category"] in (1, 2, 3, 4)
    ]
    return turns, questions


def normalize_word(word):
    """Crude suffix-stripping lemma, good enough to merge plural and tense forms."""
    for suffix, min_len in (("ies", 5), ("ing", 6), ("ed", 5), ("es", 5), ("s", 4)):
        if word.endswith(suffix) and len(word) >= min_len:
            stem = word[: -len(suffix)]
            return stem + "y" if suffix == "ies" else stem
    return word


def content_words(text, lemma=True):
    """Lowercased alphanumeric words of text minus stopwords, optionally suffix-stripped."""
    words = [w for w in WORD_RE.findall(text.lower().replace("'", "")) if w not in STOPWORDS]
    return [normalize_word(w) for w in words] if lemma else words


def stable_hash(word, seed=0):
    """Deterministic 32-bit hash of a word (CRC32), independent of PYTHONHASHSEED."""
    return zlib.crc32(f"{seed}:{word}".encode())


def auroc(scores, labels):
    """Rank-based AUROC (Mann-Whitney U) with average ranks for ties."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    n_pos = labels.sum()
    n_neg = len(labels) - n_pos
    return (ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def recall_at_k(turn_keys, query_keys, turns, questions, ks=(5, 10), allowed=None):
    """Mean fraction of evidence dia_ids found in the top-k turns by inner product.

    turn_keys: [n_turns, d], query_keys: [n_questions, d], both already normalized.
    allowed: optional boolean mask [n_turns] of turns present in memory (others are never retrieved).
    """
    index = {t["dia_id"]: i for i, t in enumerate(turns)}
    sims = query_keys @ turn_keys.T
    if allowed is not None:
        sims = np.where(allowed[None, :], sims, -np.inf)
    order = np.argsort(-sims, axis=1)
    results = {}
    for k in ks:
        fractions = []
        for qi, question in enumerate(questions):
            evidence = [index[e] for e in question["evidence"] if e in index]
            if not evidence:
                continue
            top = set(order[qi, :k].tolist())
            fractions.append(sum(e in top for e in evidence) / len(evidence))
        results[k] = float(np.mean(fractions))
    return results


def l2norm(x, axis=-1):
    """Row-wise L2 normalization with a floor against zero rows."""
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)
