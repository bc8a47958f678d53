"""Study 3: recall@5 of a memory capped at B slots, by retention policy.

Policies: uncapped, FIFO (last B turns), random B, and gate. The gate keeps the B highest gate scores seen so
far and evicts the lowest. All questions come after the last turn, so its final memory is the global top-B.
Usage: python study3.py  (needs study1.json and study2.json in /tmp/study_cache).
"""

import json

import numpy as np

import keys
from common import EVAL_CONVS, load_conversation, recall_at_k

BUDGETS = (64, 256)


def key_builders():
    study1 = json.load(open("/tmp/study_cache/study1.json"))
    total, dense_dim, weight = study1["best_minilm_hybrid_256"]
    return {
        "MiniLM (384)": lambda c: keys.minilm_key(c),
        "lexical exact, IDF running": lambda c: keys.lexical_key(c, None, "running"),
        f"MiniLM PCA{dense_dim}+lex {total - dense_dim}, w={weight}": lambda c: keys.hybrid(
            keys.reduced_minilm_key(c, dense_dim), keys.lexical_key(c, total - dense_dim, "running"), weight),
    }


def main():
    gates = json.load(open("/tmp/study_cache/study2.json"))
    rng = np.random.default_rng(0)
    lines = ["| key | policy | " + " | ".join(f"conv-{c}" for c in EVAL_CONVS) + " | mean R@5 |",
             "|---|---|" + "---|" * (len(EVAL_CONVS) + 1)]
    for key_name, builder in key_builders().items():
        rows = {}
        for c in EVAL_CONVS:
            turns, questions = load_conversation(c)
            t, q = builder(c)
            n = len(turns)

            def r5(mask):
                return recall_at_k(t, q, turns, questions, ks=(5,), allowed=mask)[5]

            rows.setdefault("uncapped", {})[c] = r5(None)
            for b in BUDGETS:
                fifo = np.zeros(n, bool)
                fifo[-b:] = True
                rows.setdefault(f"FIFO@{b}", {})[c] = r5(fifo)
                rand = np.mean([r5(np.isin(np.arange(n), rng.choice(n, b, replace=False))) for _ in range(5)])
                rows.setdefault(f"random@{b}", {})[c] = rand
                for gate_name in ("best_single", "best_combo", "logistic"):
                    score = np.array(gates["gate_scores"][str(c)][gate_name])
                    keep = np.zeros(n, bool)
                    keep[np.argsort(-score, kind="mergesort")[:b]] = True
                    rows.setdefault(f"gate {gate_name}@{b}", {})[c] = r5(keep)
        for policy, vals in rows.items():
            cells = " | ".join(f"{vals[c]:.3f}" for c in EVAL_CONVS)
            lines.append(f"| {key_name} | {policy} | {cells} | **{np.mean(list(vals.values())):.3f}** |")
    print(f"gates: best_single = {gates['best_single']}, best_combo = {gates['best_combo']}\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
