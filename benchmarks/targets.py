"""Targets the sidecar must meet, judged on the raw measured values (never on rounded ones)."""

import math
from typing import Any

PASS = "PASS"
MISS = "MISS"
NOT_RUN = "NOT RUN"


def _summary_entry(locomo: dict[str, Any], family: str, budget: int | None) -> dict[str, Any] | None:
    for entry in locomo.get("summary", []):
        if entry["family"] == family and entry["budget"] == budget:
            return entry
    return None


def _target(name: str, passed: bool | None, measured: str) -> dict[str, Any]:
    if passed is None:
        status = NOT_RUN
    elif passed:
        status = PASS
    else:
        status = MISS
    return {"target": name, "status": status, "measured": measured}


def _state_growth_target(cost: dict[str, Any] | None) -> dict[str, Any]:
    name = "Sidecar state bytes after 5000 turns within 5% of those after 100"
    growth = (cost or {}).get("state_growth", {}).get("state_bytes", {}).get("sidecar", {})
    if "100" not in growth or len(growth) < 2:
        return _target(name, None, "state growth not measured at 100 turns and later")
    last = max(growth, key=int)
    change = (growth[last] - growth["100"]) / growth["100"]
    measured = f"{growth['100']} B after 100 turns, {growth[last]} B after {last} turns ({change:+.2%})"
    if last != "5000":
        name += f" (measured up to {last} turns only)"
    return _target(name, abs(change) <= 0.05, measured)


def _recall_ratio_targets(locomo: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Recall targets, once counting the turns bound to a slot and once counting only the slot's own turn."""
    locomo = locomo or {}
    fifo = _summary_entry(locomo, "langchain FIFO", 64)
    # Both uncapped stores embed with MiniLM, so the sidecar is compared with the better of the two.
    stores = [entry for entry in locomo.get("summary", []) if entry["budget"] is None and "uncapped" in entry["family"]]
    store = max(stores, key=lambda entry: entry["recall@5"]) if stores else None
    small = _summary_entry(locomo, "sidecar", 64)
    large = _summary_entry(locomo, "sidecar", 256)
    targets = []
    for metric, label in (("recall@5", "slot and bound turns"), ("recall_own@5", "slot's own turn only")):
        name = f"LoCoMo recall@5 at 64 slots >= 3x the FIFO store capped at 64 ({label})"
        if small is None or fifo is None:
            targets.append(_target(name, None, "budget 64 not run"))
        else:
            measured = f"sidecar {small[metric]:.4f} vs 3 x {fifo['recall@5']:.4f} = {3 * fifo['recall@5']:.4f}"
            targets.append(_target(name, small[metric] >= 3 * fifo["recall@5"], measured))

        name = f"LoCoMo recall@5 at 256 slots >= uncapped MiniLM store ({label})"
        if large is None or store is None:
            targets.append(_target(name, None, "budget 256 not run"))
        else:
            measured = f"sidecar {large[metric]:.4f} vs {store['family']} {store['recall@5']:.4f}"
            targets.append(_target(name, large[metric] >= store["recall@5"], measured))
    return targets


def _knowledge_update_target(knowledge: dict[str, Any] | None) -> dict[str, Any]:
    name = "Knowledge update: current value in top 3 >= 95% and stale value in top 3 <= 5%"
    entry = None
    for peer in (knowledge or {}).get("peers", []):
        if peer["family"] == "sidecar":
            entry = peer
    if entry is None:
        return _target(name, None, "knowledge update not run")
    measured = f"current {entry['current_in_top3']:.2%}, stale {entry['stale_in_top3']:.2%} over {entry['scenarios']} scenarios"
    return _target(name, entry["current_in_top3"] >= 0.95 and entry["stale_in_top3"] <= 0.05, measured)


def _gate_target(locomo: dict[str, Any] | None) -> dict[str, Any]:
    name = "Gate AUROC for LoCoMo evidence turns >= 0.80"
    gate = (locomo or {}).get("gate")
    if not gate or math.isnan(gate["auroc"]):
        return _target(name, None, "gate not measured")
    measured = f"AUROC {gate['auroc']:.4f} over {gate['turns']} turns, commit rate {gate['commit_rate']:.2%}"
    return _target(name, gate["auroc"] >= 0.80, measured)


def _generate_target(cost: dict[str, Any] | None) -> dict[str, Any]:
    name = "Memory adds <= 5% to generate wall time"
    generate = (cost or {}).get("generate")
    if not generate:
        return _target(name, None, "generate overhead not measured")
    measured = (
        f"median {generate['sidecar_median_s']:.3f} s with memory vs {generate['plain_median_s']:.3f} s plain "
        f"({generate['added_fraction']:+.2%})"
    )
    return _target(name, generate["added_fraction"] <= 0.05, measured)


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Judge every target on ``results``; a workload that did not run yields status NOT RUN."""
    locomo = results.get("locomo")
    cost = results.get("cost")
    targets = [_state_growth_target(cost)]
    targets.extend(_recall_ratio_targets(locomo))
    targets.append(_knowledge_update_target(results.get("knowledge_update")))
    targets.append(_gate_target(locomo))
    targets.append(_generate_target(cost))
    return targets
