"""Scores shared by the workloads: evidence recall, AUROC and latency summaries."""

import math
from collections.abc import Sequence

from benchmarks.peers import Hit


def retrieved_turns(hits: Sequence[Hit], k: int, *, include_bound: bool) -> set[str]:
    """Turn ids among the first ``k`` hits, with each hit's bound turns when ``include_bound`` is set."""
    turns = set()
    for hit in hits[:k]:
        turns.add(hit.turn_id)
        if include_bound:
            turns.update(hit.bound_turn_ids)
    return turns


def evidence_recall(hits: Sequence[Hit], evidence: Sequence[str], k: int, *, include_bound: bool = True) -> float:
    """Fraction of ``evidence`` turn ids found among the first ``k`` hits."""
    if not evidence:
        raise ValueError("evidence is empty; a question without evidence turns cannot be scored")
    found = retrieved_turns(hits, k, include_bound=include_bound)
    return sum(turn_id in found for turn_id in evidence) / len(evidence)


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve of ``scores`` for positive ``labels`` (Mann-Whitney U, ties count half).

    Returns NaN when either class is empty.
    """
    if len(scores) != len(labels):
        raise ValueError(f"scores and labels differ in length: {len(scores)} != {len(labels)}")
    positives = sum(1 for label in labels if label)
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return math.nan
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    position = 0
    while position < len(order):
        end = position
        while end + 1 < len(order) and scores[order[end + 1]] == scores[order[position]]:
            end += 1
        average_rank = (position + end) / 2 + 1  # 1-based ranks, averaged over the tie group
        for index in order[position : end + 1]:
            ranks[index] = average_rank
        position = end + 1
    positive_rank_sum = sum(rank for rank, label in zip(ranks, labels) if label)
    u_statistic = positive_rank_sum - positives * (positives + 1) / 2
    return u_statistic / (positives * negatives)


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated ``q``-th percentile (0-100) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """Mean, median and 90th percentile of ``seconds``, in milliseconds, and the sample count."""
    return {
        "count": len(seconds),
        "mean_ms": mean(seconds) * 1000,
        "p50_ms": percentile(seconds, 50) * 1000,
        "p90_ms": percentile(seconds, 90) * 1000,
    }
