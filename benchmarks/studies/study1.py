"""Study 1: recall@5/10 of key encoders for LoCoMo evidence retrieval (conversations 26, 30, 41).

Usage: python study1.py  (needs extract.py caches). Prints markdown tables, writes study1.json.
"""

import json
import sys

import numpy as np

import keys
from common import EVAL_CONVS, load_conversation, recall_at_k

LAYERS = (2, 3, 4, 6, 8, 10, 12, 16, 20, 24, 30)
LEX_DIMS = (256, 512, 1024, 2048)


def evaluate(builder):
    """Run builder(conv_id) -> (turn_keys, query_keys) on every eval conversation."""
    out = {}
    for conv_id in EVAL_CONVS:
        turns, questions = load_conversation(conv_id)
        t, q = builder(conv_id)
        r = recall_at_k(t, q, turns, questions)
        out[conv_id] = (r[5], r[10])
    return out


def mean_r5(result):
    return float(np.mean([v[0] for v in result.values()]))


def row(name, result):
    cells = " | ".join(f"{result[c][0]:.3f} / {result[c][1]:.3f}" for c in EVAL_CONVS)
    means = np.mean(list(result.values()), axis=0)
    return f"| {name} | {cells} | **{means[0]:.3f}** / {means[1]:.3f} |"


def header():
    convs = " | ".join(f"conv-{c} R@5 / R@10" for c in EVAL_CONVS)
    return f"| method | {convs} | mean R@5 / R@10 |\n|---|" + "---|" * (len(EVAL_CONVS) + 1)


def main():
    results = {}
    lines = []

    # (b) layer x normalization grid for SmolLM2, mean R@5 over conversations.
    grid = {}
    for pooling in ("mean", "mean_nofirst"):
        for method in keys.DENSE_METHODS:
            for layer in LAYERS:
                grid[(pooling, method, layer)] = evaluate(
                    lambda c, l=layer, p=pooling, m=method: keys.smol_key(c, l, p, m))
    lines.append("## SmolLM2 pooled states: mean R@5 over conversations, by layer\n")
    lines.append("| pooling / normalization | " + " | ".join(f"L{l}" for l in LAYERS) + " |")
    lines.append("|---|" + "---|" * len(LAYERS))
    for pooling in ("mean", "mean_nofirst"):
        for method in keys.DENSE_METHODS:
            tag = "" if method in keys.DEPLOYABLE else " (peek)"
            cells = " | ".join(f"{mean_r5(grid[(pooling, method, l)]):.3f}" for l in LAYERS)
            lines.append(f"| {pooling} / {method}{tag} | {cells} |")

    last = {layer: evaluate(lambda c, l=layer: keys.smol_key(c, l, "last", "plain")) for layer in (12, 30)}
    deployable = {k: v for k, v in grid.items() if k[1] in keys.DEPLOYABLE}
    best_smol = max(deployable, key=lambda k: mean_r5(deployable[k]))
    best_peek = max(grid, key=lambda k: mean_r5(grid[k]))
    pooling, method, layer = best_smol
    print(f"best deployable SmolLM2 key: {best_smol}", file=sys.stderr)

    table = [header()]
    table.append(row("a. last token L30, plain", last[30]))
    table.append(row("a. last token L12, plain", last[12]))
    for key_id in sorted({best_smol, best_peek, ("mean", "plain", layer), ("mean", "center_self", layer),
                          ("mean_nofirst", "plain", layer), ("mean_nofirst", "center_self", layer),
                          ("mean_nofirst", "center_running", layer), ("mean_nofirst", "center_ref", layer),
                          ("mean_nofirst", "pc1_ref", layer), ("mean_nofirst", "meandir_ref", layer)}):
        tag = "" if key_id[1] in keys.DEPLOYABLE else " (peek)"
        table.append(row(f"b. {key_id[0]} L{key_id[2]} {key_id[1]}{tag}", grid[key_id]))
    for d in (256, 128):
        res = evaluate(lambda c, d=d: keys.reduced_smol_key(c, layer, pooling, d))
        table.append(row(f"b. {pooling} L{layer} center_std_ref + PCA(ref)->{d}", res))

    # (c) lexical keys.
    lex = {}
    for idf_source in ("ref", "generic", "running", "self"):
        for dim in (None,) + LEX_DIMS:
            if idf_source == "self" and dim is not None:
                continue
            lex[(idf_source, dim)] = evaluate(lambda c, d=dim, s=idf_source: keys.lexical_key(c, d, s))
            name = "exact" if dim is None else f"hashed D={dim}"
            tag = " (peek)" if idf_source == "self" else ""
            table.append(row(f"c. lexical {name}, IDF {idf_source}{tag}", lex[(idf_source, dim)]))
    for dim in (256, 1024):
        res = evaluate(lambda c, d=dim: keys.lexical_key(c, d, "running", n_signs=1))
        table.append(row(f"c. lexical hashed D={dim}, 1 sign/word, IDF running", res))
    for dim in (None, 1024):
        res = evaluate(lambda c, d=dim: keys.lexical_key(c, d, "running", text_mode="noprefix"))
        table.append(row(f"c. lexical {'exact' if dim is None else f'D={dim}'}, no speaker prefix, IDF running", res))

    # (d) SmolLM2 + lexical hybrids at fixed total size.
    def smol_hybrid(total, dense_dim, weight):
        return lambda c: keys.hybrid(keys.reduced_smol_key(c, layer, pooling, dense_dim),
                                     keys.lexical_key(c, total - dense_dim, "running"), weight)

    hybrid_grid = {}
    for total in (256, 512, 1024):
        for dense_dim in (64, 128, 256, 448):
            if dense_dim >= total:
                continue
            for weight in (0.3, 0.5, 0.7):
                hybrid_grid[(total, dense_dim, weight)] = evaluate(smol_hybrid(total, dense_dim, weight))
    for total in (256, 512, 1024):
        best = max((k for k in hybrid_grid if k[0] == total), key=lambda k: mean_r5(hybrid_grid[k]))
        table.append(row(f"d. SmolLM2 PCA{best[1]} + lex D={total - best[1]}, w_lex={best[2]} (total {total})",
                         hybrid_grid[best]))

    # (e, f) MiniLM and MiniLM + lexical.
    minilm = evaluate(lambda c: keys.minilm_key(c, "plain"))
    table.append(row("e. MiniLM-L6 plain (384)", minilm))
    table.append(row("e. MiniLM-L6 center_ref (384)", evaluate(lambda c: keys.minilm_key(c, "center_ref"))))
    table.append(row("e. MiniLM-L6 PCA(ref)->256", evaluate(lambda c: keys.reduced_minilm_key(c, 256))))

    def minilm_hybrid(total, dense_dim, weight):
        return lambda c: keys.hybrid(keys.reduced_minilm_key(c, dense_dim),
                                     keys.lexical_key(c, total - dense_dim, "running"), weight)

    minilm_grid = {}
    for total in (256, 512, 1024):
        for dense_dim in (128, 192, 384):
            if dense_dim >= total:
                continue
            for weight in (0.2, 0.3, 0.5):
                minilm_grid[(total, dense_dim, weight)] = evaluate(minilm_hybrid(total, dense_dim, weight))
    for total in (256, 512, 1024):
        best = max((k for k in minilm_grid if k[0] == total), key=lambda k: mean_r5(minilm_grid[k]))
        table.append(row(f"f. MiniLM PCA{best[1]} + lex D={total - best[1]}, w_lex={best[2]} (total {total})",
                         minilm_grid[best]))

    # Top-k sparse keys at d_key = 256: keep 32 of 256 components in turn keys (queries dense or sparse).
    best_h256 = max((k for k in hybrid_grid if k[0] == 256), key=lambda k: mean_r5(hybrid_grid[k]))
    best_m256 = max((k for k in minilm_grid if k[0] == 256), key=lambda k: mean_r5(minilm_grid[k]))
    candidates = {
        f"SmolLM2 PCA256 ({pooling} L{layer})": lambda c: keys.reduced_smol_key(c, layer, pooling, 256),
        "lexical D=256": lambda c: keys.lexical_key(c, 256, "running"),
        f"SmolLM2+lex hybrid 256 {best_h256[1:]}": smol_hybrid(*best_h256),
        "MiniLM PCA256": lambda c: keys.reduced_minilm_key(c, 256),
        f"MiniLM+lex hybrid 256 {best_m256[1:]}": minilm_hybrid(*best_m256),
    }
    for name, builder in candidates.items():
        table.append(row(f"sparse: {name}, dense", evaluate(builder)))
        table.append(row(f"sparse: {name}, top-32 turn keys", evaluate(
            lambda c, b=builder: (keys.sparsify(b(c)[0], 32), b(c)[1]))))
        table.append(row(f"sparse: {name}, top-32 turn+query keys", evaluate(
            lambda c, b=builder: tuple(keys.sparsify(x, 32) for x in b(c)))))

    lines.append("\n## Key encoders: R@5 / R@10 per conversation\n")
    lines.extend(table)
    lines.append("\n## Hybrid grids (mean R@5): (total D, dense dim, lexical weight)\n")
    lines.append("SmolLM2+lex: " + ", ".join(f"{k}: {mean_r5(v):.3f}" for k, v in hybrid_grid.items()))
    lines.append("\nMiniLM+lex: " + ", ".join(f"{k}: {mean_r5(v):.3f}" for k, v in minilm_grid.items()))
    print("\n".join(lines))

    results = {"best_smol": list(best_smol), "best_smol_hybrid_256": list(best_h256),
               "best_minilm_hybrid_256": list(best_m256),
               "grid": {str(k): v for k, v in grid.items()},
               "hybrid_grid": {str(k): v for k, v in hybrid_grid.items()},
               "minilm_grid": {str(k): v for k, v in minilm_grid.items()}}
    with open("/tmp/study_cache/study1.json", "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()
