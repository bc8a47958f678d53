"""LoCoMo evidence recall and gate selectivity.

Every peer observes every turn of a conversation in order, then answers each category 1-4 question with
its top 10 memories. A question scores the fraction of its evidence turns among the top 5 and top 10.
The sidecar's gate scores from the same pass give the gate-selectivity workload.
"""

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from benchmarks.locomo import Conversation, load_conversation
from benchmarks.peers import Hit, SidecarPeer
from benchmarks.resources import PeerSpec, Resources
from benchmarks.scoring import auroc, evidence_recall, mean

logger = logging.getLogger(__name__)

TOP_K = (5, 10)


@dataclass(frozen=True)
class LocomoSettings:
    conv_ids: tuple[int, ...]
    budgets: tuple[int, ...]
    key_modes: tuple[str | None, ...]
    data_dir: Path | None = None
    max_turns: int | None = None
    max_questions: int | None = None
    gate_rank: int = 64


def trim_conversation(conv: Conversation, max_turns: int | None, max_questions: int | None) -> Conversation:
    """Keep the first ``max_turns`` turns and the first ``max_questions`` questions answerable from them."""
    turns = conv.turns if max_turns is None else conv.turns[:max_turns]
    observed = {turn.dia_id for turn in turns}
    questions = [q for q in conv.questions if max_turns is None or all(e in observed for e in q.evidence)]
    if max_questions is not None:
        questions = questions[:max_questions]
    return Conversation(conv.conv_id, tuple(turns), tuple(questions))


class TokenCounter:
    """Counts prompt tokens of retrieved text, caching per text because the same turns recur."""

    def __init__(self, resources: Resources):
        self.resources = resources
        self._cache: dict[str, int] = {}

    def __call__(self, text: str) -> int:
        if text not in self._cache:
            self._cache[text] = self.resources.count_tokens(text)
        return self._cache[text]

    def hits(self, hits: list[Hit], *, include_context: bool) -> int:
        """Tokens of the hits' texts joined one per line, with their bound context when asked."""
        parts = []
        for hit in hits:
            parts.append(hit.text)
            if include_context and hit.context:
                parts.append(hit.context)
        return self("\n".join(parts))


def evaluate_peer(spec: PeerSpec, conv: Conversation, counter: TokenCounter) -> tuple[dict[str, Any], Any, list]:
    """Feed one conversation to a fresh peer and score its retrievals. Returns (row, peer, per-question hits)."""
    peer = spec.build()
    add_seconds = []
    for turn in tqdm(conv.turns, desc=f"conv {conv.conv_id} {spec.label}", unit="turn", leave=False):
        start = time.perf_counter()
        peer.add(turn.dia_id, turn.text, "user")
        add_seconds.append(time.perf_counter() - start)

    scores: dict[str, list[float]] = {}
    search_seconds = []
    raw = []
    for question in conv.questions:
        start = time.perf_counter()
        hits = peer.search(question.question, max(TOP_K))
        search_seconds.append(time.perf_counter() - start)
        raw.append([[hit.turn_id, list(hit.bound_turn_ids)] for hit in hits])
        for k in TOP_K:
            scores.setdefault(f"recall@{k}", []).append(evidence_recall(hits, question.evidence, k))
            scores.setdefault(f"recall_own@{k}", []).append(
                evidence_recall(hits, question.evidence, k, include_bound=False)
            )
            scores.setdefault(f"prompt_tokens@{k}", []).append(counter.hits(hits[:k], include_context=True))
            scores.setdefault(f"prompt_tokens_own@{k}", []).append(counter.hits(hits[:k], include_context=False))

    row: dict[str, Any] = {
        "family": spec.family,
        "budget": spec.budget,
        "options": spec.options,
        "conv": conv.conv_id,
        "turns": len(conv.turns),
        "questions": len(conv.questions),
        "state_bytes": peer.nbytes(),
        "add_ms_mean": mean(add_seconds) * 1000,
        "search_ms_mean": mean(search_seconds) * 1000,
        "question_scores": scores,
    }
    for name, values in scores.items():
        row[name] = mean(values)
    if hasattr(peer, "close"):
        peer.close()
    return row, peer, raw


def summarize_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pool per-conversation rows of each (family, budget) over all their questions."""
    groups: dict[tuple[str, int | None], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["family"], row["budget"]), []).append(row)
    summary = []
    for (family, budget), members in groups.items():
        entry: dict[str, Any] = {
            "family": family,
            "budget": budget,
            "options": members[0]["options"],
            "conversations": [row["conv"] for row in members],
            "questions": sum(row["questions"] for row in members),
            "state_bytes_mean": mean([row["state_bytes"] for row in members]),
            "state_bytes_max": max(row["state_bytes"] for row in members),
            "add_ms_mean": mean([row["add_ms_mean"] for row in members]),
            "search_ms_mean": mean([row["search_ms_mean"] for row in members]),
        }
        for name in members[0]["question_scores"]:
            pooled = [value for row in members for value in row["question_scores"][name]]
            entry[name] = mean(pooled)
        entry["per_conv_recall@5"] = {str(row["conv"]): row["recall@5"] for row in members}
        summary.append(entry)
    return summary


def gate_record(peer: SidecarPeer, conv: Conversation) -> dict[str, Any]:
    """Gate scores of one sidecar pass against the conversation's evidence turns."""
    evidence = {turn_id for question in conv.questions for turn_id in question.evidence}
    labels = [turn_id in evidence for turn_id in peer.turn_ids]
    gate_scores = [float(decision.G) for decision in peer.decisions]
    committed = [bool(decision.committed) for decision in peer.decisions]
    evidence_commits = [c for c, label in zip(committed, labels) if label]
    return {
        "conv": conv.conv_id,
        "turns": len(labels),
        "evidence_turns": sum(labels),
        "auroc": auroc(gate_scores, labels),
        "commit_rate": mean([float(c) for c in committed]),
        "evidence_commit_rate": mean([float(c) for c in evidence_commits]),
        "G": gate_scores,
        "tau": [float(decision.tau) for decision in peer.decisions],
        "committed": committed,
        "is_evidence": labels,
    }


def summarize_gate(records: list[dict[str, Any]], rank: int) -> dict[str, Any]:
    """Pool the per-conversation gate records into one AUROC and commit rate."""
    scores = [g for record in records for g in record["G"]]
    labels = [label for record in records for label in record["is_evidence"]]
    committed = [c for record in records for c in record["committed"]]
    evidence_commits = [c for record in records for c, label in zip(record["committed"], record["is_evidence"]) if label]
    return {
        "rank": rank,
        "auroc": auroc(scores, labels),
        "commit_rate": mean([float(c) for c in committed]),
        "evidence_commit_rate": mean([float(c) for c in evidence_commits]),
        "turns": len(labels),
        "evidence_turns": sum(labels),
        "per_conv": records,
    }


def run_locomo(resources: Resources, settings: LocomoSettings, raw_dir: Path | None = None) -> dict[str, Any]:
    """Run the LoCoMo recall workload and the gate workload on its default-sidecar pass."""
    conversations = []
    for conv_id in settings.conv_ids:
        conv = load_conversation(conv_id, settings.data_dir)
        conversations.append(trim_conversation(conv, settings.max_turns, settings.max_questions))

    encoder = resources.encoder
    texts = [turn.text for conv in conversations for turn in conv.turns]
    texts += [f"<message role='user'>{text}</message>" for text in texts]
    texts += [question.question for conv in conversations for question in conv.questions]
    logger.info("encoding %d texts with MiniLM", len(texts))
    encoder.prefill(texts)

    specs = resources.peer_specs(list(settings.budgets), list(settings.key_modes))
    if settings.gate_rank not in settings.budgets:
        specs.append(resources.sidecar_spec(settings.gate_rank, None))
    counter = TokenCounter(resources)
    rows = []
    gate_records = []
    raw_lines = []
    progress = tqdm(total=len(specs) * len(conversations), desc="LoCoMo recall", unit="pass")
    for conv in conversations:
        for spec in specs:
            row, peer, raw = evaluate_peer(spec, conv, counter)
            progress.update(1)
            if spec.family == "sidecar" and spec.budget == settings.gate_rank:
                gate_records.append(gate_record(peer, conv))
            rows.append(row)
            raw_lines.append({"conv": conv.conv_id, "peer": spec.label, "hits": raw})
    progress.close()

    if raw_dir is not None:
        raw_dir.mkdir(parents=True, exist_ok=True)
        with open(raw_dir / "locomo_hits.jsonl", "w", encoding="utf-8") as handle:
            for line in raw_lines:
                handle.write(json.dumps(line) + "\n")

    summary = summarize_rows(rows)
    for row in rows:
        del row["question_scores"]
    return {
        "conversations": list(settings.conv_ids),
        "turns": {str(conv.conv_id): len(conv.turns) for conv in conversations},
        "questions": {str(conv.conv_id): len(conv.questions) for conv in conversations},
        "budgets": list(settings.budgets),
        "top_k": list(TOP_K),
        "rows": rows,
        "summary": summary,
        "gate": summarize_gate(gate_records, settings.gate_rank) if gate_records else None,
    }
