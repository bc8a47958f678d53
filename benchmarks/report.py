"""Render results.json as docs/benchmarks.md with PNG plots in docs/img/.

Run ``python -m benchmarks.report --results benchmarks/results/results.json`` to rebuild the page from a
saved run without measuring again.
"""

import argparse
import json
import logging
import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.locomo import REPO_ROOT  # noqa: E402
from benchmarks.targets import evaluate_targets  # noqa: E402

logger = logging.getLogger(__name__)

PAGE_NAME = "benchmarks.md"
IMAGE_DIR = "img"


# ---------------------------------------------------------------------------- environment
def git_commit(repo: Path = REPO_ROOT) -> str:
    """Return the checked-out commit, marked ``(with uncommitted changes)`` when the tree is dirty."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git commit found)"
    try:
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        dirty = ""
    return f"{head} (with uncommitted changes)" if dirty else head


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except (OSError, ValueError):
        pass
    return None


def describe_machine() -> dict[str, Any]:
    """CPU model, core count, RAM and library versions of this machine."""
    import torch
    import transformers

    memory = _memory_gib()
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": None if memory is None else round(memory, 1),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


# ---------------------------------------------------------------------------- formatting
def _number(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def _percent(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.1%}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return "\n".join(lines)


def _budget(value: int | None) -> str:
    return "all turns" if value is None else str(value)


# ---------------------------------------------------------------------------- plots
def plot_recall_against_budget(locomo: dict[str, Any], path: Path) -> None:
    figure, axis = plt.subplots(figsize=(7, 4.5))
    families: dict[str, list[tuple[int, float]]] = {}
    for entry in locomo["summary"]:
        if entry["budget"] is None:
            axis.axhline(entry["recall@5"], linestyle="--", linewidth=1, label=f"{entry['family']} (all turns)",
                         color="gray" if "langchain" in entry["family"] else "black")
        else:
            families.setdefault(entry["family"], []).append((entry["budget"], entry["recall@5"]))
    for family, points in families.items():
        points.sort()
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=family)
    axis.set_xscale("log", base=2)
    axis.set_xlabel("budget (slots or stored turns)")
    axis.set_ylabel("evidence recall@5")
    axis.set_title("LoCoMo evidence recall@5 against budget")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_state_bytes(growth: dict[str, Any], path: Path) -> None:
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for name, points in growth["state_bytes"].items():
        turns = sorted(int(t) for t in points)
        axis.plot(turns, [points[str(t)] for t in turns], marker="o", label=name)
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("turns observed")
    axis.set_ylabel("state bytes")
    axis.set_title(f"State size against turns (budget {growth['rank']})")
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_gate(record: dict[str, Any], path: Path) -> None:
    figure, axis = plt.subplots(figsize=(9, 4))
    turns = list(range(len(record["G"])))
    axis.plot(turns, record["G"], linewidth=0.8, color="tab:blue", label="G")
    axis.plot(turns, record["tau"], linewidth=0.8, color="tab:orange", label="tau")
    evidence = [t for t in turns if record["is_evidence"][t]]
    axis.scatter(evidence, [record["G"][t] for t in evidence], s=14, color="tab:red", zorder=3,
                 label="evidence turn")
    committed = [t for t in turns if record["committed"][t]]
    axis.scatter(committed, [min(record["G"]) - 0.05] * len(committed), marker="|", s=30, color="tab:green",
                 label="committed")
    axis.set_xlabel("turn")
    axis.set_ylabel("gate score")
    axis.set_title(f"Gate score over LoCoMo conversation {record['conv']}")
    axis.legend(fontsize=8, loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# ---------------------------------------------------------------------------- sections
def _header(results: dict[str, Any]) -> list[str]:
    meta = results["meta"]
    machine = meta["machine"]
    return [
        "# Benchmarks",
        "",
        "Sidecar memory against vector-store and window memories on LoCoMo evidence recall, knowledge updates,",
        "gate selectivity and cost. This page is generated by `benchmarks/report.py` from",
        "`benchmarks/results/results.json`; edit the code, not the page.",
        "",
        f"- Command: `{meta['command']}`",
        f"- Commit: `{meta['commit']}`",
        f"- Started: {meta['started']} (UTC), took {meta['duration_s'] / 60:.1f} min",
        f"- Machine: {machine['cpu']}, {machine['cores']} cores, {machine['ram_gib']} GiB RAM, "
        f"torch {machine['torch']} ({machine['torch_threads']} thread), transformers {machine['transformers']}, "
        f"Python {machine['python']}",
        f"- Sidecar default config: {meta.get('sidecar_defaults', 'n/a')}",
        "",
    ]


def _targets_section(results: dict[str, Any]) -> list[str]:
    rows = [[t["target"], f"**{t['status']}**", t["measured"]] for t in evaluate_targets(results)]
    return [
        "## Targets",
        "",
        "Judged on unrounded values; the measured column rounds only for display.",
        "",
        _table(["Target", "Status", "Measured"], rows),
        "",
        "What was measured to choose the design, and what was tried against each miss: [tuning.md](tuning.md).",
        "",
    ]


def _locomo_section(locomo: dict[str, Any], image_dir: Path) -> list[str]:
    convs = [str(c) for c in locomo["conversations"]]
    header = ["Memory", "Budget", "recall@5", "recall@10", "own@5", "own@10", "tokens@5", "tokens@10",
              "own tokens@5", "state bytes (mean)"] + [f"conv {c} @5" for c in convs]
    rows = []
    for entry in sorted(locomo["summary"], key=lambda e: (e["budget"] is None, e["budget"] or 0, e["family"])):
        rows.append(
            [entry["family"], _budget(entry["budget"]), _number(entry["recall@5"]), _number(entry["recall@10"]),
             _number(entry["recall_own@5"]), _number(entry["recall_own@10"]), _number(entry["prompt_tokens@5"], 1),
             _number(entry["prompt_tokens@10"], 1), _number(entry["prompt_tokens_own@5"], 1),
             _number(int(entry["state_bytes_mean"]))]
            + [_number(entry["per_conv_recall@5"].get(c)) for c in convs]
        )
    plot_recall_against_budget(locomo, image_dir / "recall_vs_budget.png")
    counts = ", ".join(f"conv {c}: {locomo['turns'][c]} turns, {locomo['questions'][c]} questions" for c in convs)
    return [
        "## LoCoMo evidence recall",
        "",
        "Each memory observes every turn (`Speaker: text`, plus the photo caption when the turn shares a photo),",
        "then answers every category 1-4 question with its top 10 memories. A question scores the fraction of its",
        "evidence turns among the top 5 and top 10; the table pools all questions of all conversations",
        f"({counts}).",
        "",
        "- `recall@k` counts a sidecar slot's own turn and the turns its eligibility trace bound to it",
        "  (`MemoryItem.bound_turns`); `own@k` counts the slot's own turn only. The stores bind nothing, so both",
        "  columns agree for them.",
        "- `tokens@k`: SmolLM2 tokens of the retrieved texts per question (for the sidecar, slot text plus bound",
        "  context); `own tokens@5` counts slot text only. The steering prefix is not counted.",
        "- State bytes: the sidecar's `state_nbytes()` (serialised state); for the stores, float32 embeddings",
        "  (384 per turn) plus UTF-8 text; for the window, its UTF-8 text.",
        "- The window returns its most recent turns regardless of the question.",
        "- LlamaIndex `VectorMemoryBlock` runs over a small text-keeping vector store written for this harness,",
        "  because llama-index-core ships none; the block embeds each turn wrapped in `<message role='user'>`.",
        "",
        _table(header, rows),
        "",
        f"![Recall against budget]({IMAGE_DIR}/recall_vs_budget.png)",
        "",
    ]


def _knowledge_section(knowledge: dict[str, Any]) -> list[str]:
    rows = []
    attributes: list[str] = []
    for peer in knowledge["peers"]:
        attributes = list(peer["current_in_top3_by_attribute"])
        markers = peer["current_in_top3_by_marker"]
        rows.append(
            [peer["family"], _budget(peer["budget"]), _percent(peer["current_in_top3"]),
             _percent(peer["stale_in_top3"]), _percent(peer["current_at_1"]),
             _percent(markers.get("with marker")), _percent(markers.get("without marker"))]
        )
    attribute_rows = [
        [peer["family"] + ("" if peer["budget"] is None else f" @{peer['budget']}")]
        + [_percent(peer["current_in_top3_by_attribute"][a]) for a in attributes]
        for peer in knowledge["peers"]
    ]
    gate_rows = [
        [peer["family"]] + [_percent(peer["gate"][name]) for name in peer["gate"]]
        for peer in knowledge["peers"] if peer.get("gate")
    ]
    gate_names = next((list(peer["gate"]) for peer in knowledge["peers"] if peer.get("gate")), [])
    return [
        "## Knowledge update",
        "",
        f"{knowledge['scenarios']} generated scenarios (`benchmarks/knowledge_update.py`, seed {knowledge['seed']},",
        f"{knowledge['turns']} turns in all): a user states a fact, 3-10 chatter turns follow, then the fact",
        f"changes ({knowledge['two_updates']} scenarios change it twice); a probe question asks for its current value.",
        f"{knowledge['with_change_marker']} scenarios phrase an update with an explicit change word",
        "(actually, now, anymore, switched, moved, ...). A fresh memory observes each scenario, then returns its",
        "top 3 memories for the probe. *Current* means a retrieved text names the current value; *stale* means one",
        "names an earlier value without the current one, so \"I moved from Denver to Osaka\" counts as current.",
        "",
        _table(["Memory", "Budget", "current in top 3", "stale in top 3", "current at 1",
                "current, with marker", "current, without marker"], rows),
        "",
        "Current value in the top 3, by attribute:",
        "",
        _table(["Memory"] + attributes, attribute_rows),
        "",
        "Sidecar gate outcomes of the statement turns (share of scenarios; the update is the last change):",
        "",
        _table(["Memory"] + gate_names, gate_rows),
        "",
    ]


def _gate_section(gate: dict[str, Any], image_dir: Path) -> list[str]:
    rows = [
        [str(r["conv"]), _number(r["turns"]), _number(r["evidence_turns"]), _number(r["auroc"]),
         _percent(r["commit_rate"]), _percent(r["evidence_commit_rate"])]
        for r in gate["per_conv"]
    ]
    rows.append(["all", _number(gate["turns"]), _number(gate["evidence_turns"]), _number(gate["auroc"]),
                 _percent(gate["commit_rate"]), _percent(gate["evidence_commit_rate"])])
    plot_gate(gate["per_conv"][0], image_dir / "gate_over_conversation.png")
    return [
        "## Gate selectivity",
        "",
        f"AUROC of the gate score `GateDecision.G` for evidence turns (the evidence of any category 1-4",
        f"question) against all other turns, from the default sidecar's LoCoMo pass at rank {gate['rank']}.",
        "",
        _table(["Conversation", "Turns", "Evidence turns", "AUROC", "Commit rate", "Evidence committed"], rows),
        "",
        f"![Gate score over a conversation]({IMAGE_DIR}/gate_over_conversation.png)",
        "",
    ]


def _cost_section(cost: dict[str, Any], image_dir: Path) -> list[str]:
    lines = ["## Cost", ""]
    growth = cost.get("state_growth")
    if growth:
        checkpoints = [str(c) for c in growth["checkpoints"]]
        rows = [[name, _budget(growth["budgets"].get(name))] + [_number(points.get(c)) for c in checkpoints]
                for name, points in growth["state_bytes"].items()]
        plot_state_bytes(growth, image_dir / "state_bytes_vs_turns.png")
        observe = growth["observe_latency"]
        lines += [
            "### State bytes against turns",
            "",
            "Synthetic varied turns (`benchmarks/cost.py`), observed one after another.",
            "",
            _table(["Memory", "Budget"] + [f"after {c} turns" for c in checkpoints], rows),
            "",
            f"![State bytes against turns]({IMAGE_DIR}/state_bytes_vs_turns.png)",
            "",
            f"Sidecar `observe` latency over these {observe['count']} turns: mean {observe['mean_ms']:.1f} ms,",
            f"median {observe['p50_ms']:.1f} ms, 90th percentile {observe['p90_ms']:.1f} ms.",
            "",
        ]
    latency = cost.get("peer_latency")
    if latency:
        rows = [[r["family"], _number(r["write"]["p50_ms"], 2), _number(r["write"]["p90_ms"], 2),
                 _number(r["read_top5"]["p50_ms"], 2), _number(r["read_top5"]["p90_ms"], 2)] for r in latency]
        lines += [
            "### Write and read latency",
            "",
            f"Each memory stores {latency[0]['stored_turns']} synthetic turns (timed as writes), then answers",
            f"{latency[0]['read_top5']['count']} top-5 searches. MiniLM encodes every text anew (no cache), so",
            "store latencies include embedding. Sidecar writes are `observe`, reads are `recall`.",
            "",
            _table(["Memory", "write p50 ms", "write p90 ms", "read p50 ms", "read p90 ms"], rows),
            "",
        ]
    generate = cost.get("generate")
    if generate:
        lines += [
            "### Generation overhead",
            "",
            f"`Sidecar.generate` (memory of {generate['history_turns']} synthetic turns) against plain",
            f"`model.generate` on the same prompt, both greedy with max_new_tokens = min_new_tokens =",
            f"{generate['max_new_tokens']}, interleaved, {generate['repeats']} timed pairs after one warm-up each.",
            f"The plain prompt has {generate['plain_prompt_tokens']} tokens; the memory text the sidecar puts",
            f"in its system message has about {generate['memory_text_tokens']} tokens. The sidecar's time",
            "includes recall, the longer prompt and the commit of the prompt.",
            "",
            _table(
                ["Path", "median s", "all runs s"],
                [
                    ["plain model.generate", f"{generate['plain_median_s']:.3f}",
                     ", ".join(f"{s:.3f}" for s in generate["plain_seconds"])],
                    ["Sidecar.generate", f"{generate['sidecar_median_s']:.3f}",
                     ", ".join(f"{s:.3f}" for s in generate["sidecar_seconds"])],
                ],
            ),
            "",
            f"Memory adds {generate['added_fraction']:+.1%} to generation wall time (ratio {generate['ratio']:.3f}).",
            "",
        ]
    return lines


def _render_value(value: Any, depth: int) -> list[str]:
    """Render an unknown JSON value: dicts of scalars and lists of flat dicts become tables."""
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        keys = list(dict.fromkeys(key for item in value for key in item))
        if all(not isinstance(item.get(key), (dict, list)) for item in value for key in keys):
            rows = [[_plain(item.get(key)) for key in keys] for item in value]
            return [_table(keys, rows), ""]
    if isinstance(value, dict):
        scalars = {k: v for k, v in value.items() if not isinstance(v, (dict, list))}
        nested = {k: v for k, v in value.items() if isinstance(v, (dict, list))}
        lines = []
        if scalars:
            lines += [_table(["Field", "Value"], [[k, _plain(v)] for k, v in scalars.items()]), ""]
        if depth < 3:
            for key, item in nested.items():
                lines += [f"{'#' * (depth + 3)} {key}", ""] + _render_value(item, depth + 1)
            return lines
        if nested:
            lines += ["```json", json.dumps(nested, indent=2), "```", ""]
        return lines
    return ["```json", json.dumps(value, indent=2), "```", ""]


def _plain(value: Any) -> str:
    if isinstance(value, float):
        return _number(value)
    return str(value).replace("|", "\\|")


def _store_load_section(path: Path) -> list[str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        logger.warning("skipping store-load results at %s: %s", path, error)
        return []
    return [
        "## Store load",
        "",
        f"Results of `benchmarks/store_load.py`, read from `{path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path}`.",
        "",
    ] + _render_value(data, 0)


def write_report(results: dict[str, Any], docs_dir: Path, store_load_path: Path | None = None) -> Path:
    """Write ``benchmarks.md`` and its plots under ``docs_dir`` and return the page's path."""
    docs_dir = Path(docs_dir)
    image_dir = docs_dir / IMAGE_DIR
    image_dir.mkdir(parents=True, exist_ok=True)
    lines = _header(results) + _targets_section(results)
    locomo = results.get("locomo")
    if locomo:
        lines += _locomo_section(locomo, image_dir)
    knowledge = results.get("knowledge_update")
    if knowledge:
        lines += _knowledge_section(knowledge)
    if locomo and locomo.get("gate"):
        lines += _gate_section(locomo["gate"], image_dir)
    cost = results.get("cost")
    if cost:
        lines += _cost_section(cost, image_dir)
    if store_load_path is not None and Path(store_load_path).is_file():
        lines += _store_load_section(Path(store_load_path))
    page = docs_dir / PAGE_NAME
    page.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    logger.info("wrote %s", page)
    return page


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Rebuild docs/benchmarks.md from a saved results.json.")
    parser.add_argument("--results", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "results.json",
                        help="results file written by benchmarks.run")
    parser.add_argument("--docs", type=Path, default=REPO_ROOT / "docs", help="folder that receives benchmarks.md and img/")
    args = parser.parse_args(argv)
    results = json.loads(args.results.read_text(encoding="utf-8"))
    write_report(results, args.docs, args.results.parent / "store_load.json")


if __name__ == "__main__":
    main()
