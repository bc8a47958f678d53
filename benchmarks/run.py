"""Command line entry point: ``python -m benchmarks.run --out benchmarks/results``.

Runs the selected workloads, writes ``<out>/results.json`` (and per-question hits under ``<out>/raw/``),
then regenerates ``docs/benchmarks.md`` and its plots.
"""

import argparse
import json
import logging
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from benchmarks.cost import CostSettings, run_cost
from benchmarks.knowledge_update import DEFAULT_COUNT, DEFAULT_SEED, run_knowledge_update
from benchmarks.locomo import DEFAULT_CONVERSATIONS, REPO_ROOT
from benchmarks.recall import LocomoSettings, run_locomo
from benchmarks.report import describe_machine, git_commit, write_report
from benchmarks.resources import Resources
from benchmarks.targets import evaluate_targets

logger = logging.getLogger("benchmarks")

WORKLOADS = ("locomo", "knowledge-update", "gate", "cost")
QUICK_KNOWLEDGE_COUNT = 44
QUICK_CHECKPOINTS = (10, 100, 1000)


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 32,64,256; got {text!r}") from error
    if not values or any(value < 1 for value in values):
        raise argparse.ArgumentTypeError(f"expected positive integers; got {text!r}")
    return values


def _workload_list(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [name for name in names if name not in WORKLOADS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown workload(s) {unknown or text!r}; choose from {', '.join(WORKLOADS)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Benchmark sidecar memory against vector-store and window memories.",
    )
    # Outputs and workload selection.
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results",
                        help="folder for results.json and raw/ (default: benchmarks/results)")
    parser.add_argument("--docs", type=Path, default=REPO_ROOT / "docs",
                        help="folder that receives benchmarks.md and img/*.png (default: docs)")
    parser.add_argument("--convs", type=_int_list, default=DEFAULT_CONVERSATIONS,
                        help="LoCoMo conversation ids, comma-separated (default: 26,30,41)")
    parser.add_argument("--budgets", type=_int_list, default=(32, 64, 256),
                        help="memory budgets in slots or stored turns, comma-separated (default: 32,64,256)")
    parser.add_argument("--workloads", type=_workload_list, default=WORKLOADS,
                        help=f"workloads to run, comma-separated, from {','.join(WORKLOADS)} (default: all); "
                             "gate shares the LoCoMo pass")

    # Sizes of the LoCoMo, gate and knowledge-update workloads.
    parser.add_argument("--quick", action="store_true",
                        help=f"smaller run: first conversation only, {QUICK_KNOWLEDGE_COUNT} knowledge-update "
                             f"scenarios, state growth up to {QUICK_CHECKPOINTS[-1]} turns, 3 generate pairs")
    parser.add_argument("--key-modes", default="hidden,lexical",
                        help="sidecar key modes to compare with the default one, comma-separated; empty for none "
                             "(default: hidden,lexical)")
    parser.add_argument("--gate-rank", type=int, default=None,
                        help="sidecar rank whose LoCoMo pass feeds the gate workload (default: the engine's default rank)")

    parser.add_argument("--knowledge-count", type=int, default=DEFAULT_COUNT,
                        help=f"number of knowledge-update scenarios (default: {DEFAULT_COUNT})")
    parser.add_argument("--knowledge-seed", type=int, default=DEFAULT_SEED,
                        help=f"seed of the knowledge-update generator (default: {DEFAULT_SEED})")

    # Sizes of the cost workload and of tiny runs.
    parser.add_argument("--checkpoints", type=_int_list, default=(10, 100, 1000, 5000),
                        help="turn counts at which state bytes are recorded (default: 10,100,1000,5000)")
    parser.add_argument("--max-turns", type=int, default=None,
                        help="observe only the first N turns of each conversation (default: all)")
    parser.add_argument("--max-questions", type=int, default=None,
                        help="ask only the first N answerable questions of each conversation (default: all)")
    parser.add_argument("--latency-writes", type=int, default=200, help="writes timed per peer (default: 200)")
    parser.add_argument("--latency-reads", type=int, default=50, help="top-5 reads timed per peer (default: 50)")
    parser.add_argument("--generate-repeats", type=int, default=5,
                        help="timed pairs of plain and sidecar generation (default: 5)")
    parser.add_argument("--max-new-tokens", type=int, default=32,
                        help="tokens generated per call in the overhead measurement (default: 32)")

    # Inputs and machine.
    parser.add_argument("--model", default=None,
                        help="local Hugging Face model folder to use instead of the embedded SmolLM2-135M-Instruct")
    parser.add_argument("--locomo-dir", type=Path, default=None,
                        help="folder with conv-<id>.json files (default: <repo>/../shared/data/locomo)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    return parser


def _key_modes(text: str) -> tuple[str | None, ...]:
    """Return the engine's default key mode (as None) followed by the requested alternatives."""
    from sidecar_memory import SidecarConfig

    default = SidecarConfig().key_mode
    alternatives = [mode.strip() for mode in text.split(",") if mode.strip() and mode.strip() != default]
    for mode in alternatives:
        SidecarConfig(key_mode=mode)  # raises InvalidInputError naming the allowed modes
    return (None, *alternatives)


def run(args: argparse.Namespace, command: str, resources: Resources | None = None) -> dict[str, Any]:
    """Run the workloads that ``args`` selects and return the results dictionary.

    ``resources`` supplies already loaded models; None loads the model that ``--model`` names. The torch thread
    count is restored afterwards, so a caller such as a test session keeps its own setting.
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run_workloads(args, command, resources)
    finally:
        torch.set_num_threads(previous_threads)


def _run_workloads(args: argparse.Namespace, command: str, resources: Resources | None) -> dict[str, Any]:
    from sidecar_memory import SidecarConfig

    started = time.time()
    defaults = SidecarConfig()
    gate_rank = args.gate_rank or defaults.rank
    key_modes = _key_modes(args.key_modes)
    convs = args.convs[:1] if args.quick else args.convs
    knowledge_count = min(args.knowledge_count, QUICK_KNOWLEDGE_COUNT) if args.quick else args.knowledge_count
    checkpoints = tuple(c for c in args.checkpoints if c <= QUICK_CHECKPOINTS[-1]) if args.quick else args.checkpoints
    repeats = min(args.generate_repeats, 3) if args.quick else args.generate_repeats

    if resources is None:
        resources = Resources(args.model)
    results: dict[str, Any] = {
        "meta": {
            "command": command,
            "commit": git_commit(),
            "started": datetime.fromtimestamp(started, timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
            "machine": describe_machine(),
            "workloads": list(args.workloads),
            "sidecar_defaults": f"rank={defaults.rank}, key_mode={defaults.key_mode}, d_key={defaults.d_key}",
        }
    }
    if "locomo" in args.workloads or "gate" in args.workloads:
        settings = LocomoSettings(
            conv_ids=tuple(convs),
            budgets=tuple(args.budgets),
            key_modes=key_modes,
            data_dir=args.locomo_dir,
            max_turns=args.max_turns,
            max_questions=args.max_questions,
            gate_rank=gate_rank,
        )
        results["locomo"] = run_locomo(resources, settings, raw_dir=args.out / "raw")
    if "knowledge-update" in args.workloads:
        results["knowledge_update"] = run_knowledge_update(
            resources, count=knowledge_count, seed=args.knowledge_seed, rank=defaults.rank, key_modes=key_modes
        )
    if "cost" in args.workloads:
        cost_settings = CostSettings(
            checkpoints=tuple(checkpoints),
            rank=defaults.rank,
            latency_writes=args.latency_writes,
            latency_reads=args.latency_reads,
            generate_repeats=repeats,
            max_new_tokens=args.max_new_tokens,
        )
        results["cost"] = run_cost(resources, cost_settings)
    results["meta"]["duration_s"] = time.time() - started
    results["targets"] = evaluate_targets(results)
    return results


def main(argv: list[str] | None = None, resources: Resources | None = None) -> dict[str, Any]:
    """Parse ``argv``, run, write results.json and the report, and return the results."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    command = shlex.join(["python", "-m", "benchmarks.run", *argv])
    results = run(args, command, resources)

    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results_path.write_text(json.dumps(results, indent=1, allow_nan=True) + "\n", encoding="utf-8")
    logger.info("wrote %s", results_path)
    write_report(results, args.docs, args.out / "store_load.json")
    for target in results["targets"]:
        logger.info("%s: %s (%s)", target["status"], target["target"], target["measured"])
    return results


if __name__ == "__main__":
    main()
