"""Study 2: AUROC of per-turn gate features for predicting LoCoMo evidence turns.

A turn is positive if it is evidence for any category 1-4 question. NLL comes from SmolLM2-135M with the
previous turn as context in plain "Speaker: text" lines (see extract.turn_nll).
Usage: python study2.py  (needs extract.py caches and /tmp/study_cache/study1.json). Writes study2.json.
"""

import json
import re

import numpy as np

import keys
from common import EVAL_CONVS, REF_CONV, WORD_RE, auroc, content_words, load_conversation

NOVELTY_WINDOW = 50
COMBO_SIZES = (2, 3, 4)
FIRST_PERSON = frozenset("i im ive id ill me my mine myself we were weve our ours us".split())
PAST_IRREGULAR = frozenset("""went got had was were did made took saw came found gave told felt thought
    bought began brought built caught ran met left kept lost won wrote read heard taught""".split())


def novelty(turn_keys, window=NOVELTY_WINDOW):
    """1 - max cosine of each turn key to the previous window turn keys (1.0 for the first turn)."""
    sims = turn_keys @ turn_keys.T
    out = np.ones(len(turn_keys))
    for i in range(1, len(turn_keys)):
        out[i] = 1 - sims[i, max(0, i - window):i].max()
    return out


def running_idf_mass(texts):
    """Sum over content words of IDF from the turns seen so far (the current turn included)."""
    df, out = {}, []
    for i, text in enumerate(texts):
        words = content_words(text)
        for w in set(words):
            df[w] = df.get(w, 0) + 1
        out.append(sum(np.log((i + 2) / (df[w] + 1)) + 1 for w in words))
    return np.array(out)


def features(conv_id, best_smol):
    """Compute the per-turn feature table {name: [n_turns]} and the labels [n_turns] of one conversation."""
    turns, questions = load_conversation(conv_id)
    evidence = {e for q in questions for e in q["evidence"]}
    labels = np.array([t["dia_id"] in evidence for t in turns])
    cache = keys.smol_cache(conv_id)
    nll, offsets = cache["nll"], cache["nll_offsets"]
    per_turn_nll = [nll[offsets[i]:offsets[i + 1]] for i in range(len(turns))]
    body = [t["text"][len(t["speaker"]) + 2:] for t in turns]  # text without the speaker prefix
    idf, idf_unseen = keys.idf_table("ref")

    feats = {}
    feats["token_count"] = cache["t_len"].astype(float)
    feats["content_words"] = np.array([len(content_words(b)) for b in body], float)
    feats["distinct_content_words"] = np.array([len(set(content_words(b))) for b in body], float)
    feats["capitalized_mid_sentence"] = np.array([
        len(re.findall(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-z]+", t["raw"])) for t in turns], float)
    feats["numbers"] = np.array([len(re.findall(r"\d+", t["raw"])) for t in turns], float)
    feats["nll_mean"] = np.array([x.mean() for x in per_turn_nll])
    feats["nll_sum"] = np.array([x.sum() for x in per_turn_nll])
    feats["nll_max"] = np.array([x.max() for x in per_turn_nll])
    feats["nll_tokens_over_5"] = np.array([(x > 5).sum() for x in per_turn_nll], float)
    feats["nll_tokens_over_3"] = np.array([(x > 3).sum() for x in per_turn_nll], float)
    feats["idf_mass_ref"] = np.array([sum(idf.get(w, idf_unseen) for w in content_words(b)) for b in body])
    feats["idf_mass_running"] = running_idf_mass(body)
    words = [WORD_RE.findall(t["raw"].lower().replace("'", "")) for t in turns]
    feats["first_person"] = np.array([sum(w in FIRST_PERSON for w in ws) for ws in words], float)
    feats["past_tense"] = np.array([sum(w in PAST_IRREGULAR or (w.endswith("ed") and len(w) > 4) for w in ws)
                                    for ws in words], float)
    feats["prev_is_question"] = np.array([0.0] + [turns[i - 1]["raw"].strip().endswith("?")
                                                  for i in range(1, len(turns))], float)
    feats["is_question"] = np.array([t["raw"].strip().endswith("?") for t in turns], float)
    feats["has_photo"] = np.array([t["has_photo"] for t in turns], float)
    feats["novelty_minilm"] = novelty(keys.minilm_key(conv_id)[0])
    feats["novelty_lex_running"] = novelty(keys.lexical_key(conv_id, None, "running")[0])
    feats["novelty_lex_running_noprefix"] = novelty(keys.lexical_key(conv_id, None, "running",
                                                                     text_mode="noprefix")[0])
    pooling, method, layer = best_smol
    feats["novelty_smol"] = novelty(keys.smol_key(conv_id, layer, pooling, method)[0])
    return feats, labels


def zscore_combo(feats, names, signs, stats):
    return sum(signs[n] * (feats[n] - stats[n][0]) / stats[n][1] for n in names)


def fit_logistic(x, y, l2=1e-2, steps=2000, lr=0.1):
    """Fit L2-regularized logistic regression by gradient descent on x [n, d]. Returns weights [d + 1], bias last."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(xb.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-xb @ w))
        w -= lr * (xb.T @ (p - y) / len(y) + l2 * np.r_[w[:-1], 0])
    return w


def coverage(score, labels, fractions=(0.1, 0.2, 0.4)):
    order = np.argsort(-score, kind="mergesort")
    return {f: float(labels[order[: int(round(f * len(score)))]].sum() / labels.sum()) for f in fractions}


def main():
    best_smol = tuple(json.load(open("/tmp/study_cache/study1.json"))["best_smol"])
    ref_feats, ref_labels = features(REF_CONV, best_smol)
    names = list(ref_feats)
    ref_auc = {n: auroc(ref_feats[n], ref_labels) for n in names}
    signs = {n: 1.0 if ref_auc[n] >= 0.5 else -1.0 for n in names}
    stats = {n: (ref_feats[n].mean(), ref_feats[n].std() + 1e-9) for n in names}

    data = {c: features(c, best_smol) for c in EVAL_CONVS}
    auc = {n: {c: auroc(data[c][0][n], data[c][1]) for c in EVAL_CONVS} for n in names}

    lines = ["## Single features: AUROC (positive = evidence turn)\n",
             f"| feature | conv-{REF_CONV} (ref) | " + " | ".join(f"conv-{c}" for c in EVAL_CONVS) + " | mean |",
             "|---|" + "---|" * (len(EVAL_CONVS) + 2)]
    for n in sorted(names, key=lambda n: -np.mean(list(auc[n].values()))):
        cells = " | ".join(f"{auc[n][c]:.3f}" for c in EVAL_CONVS)
        lines.append(f"| {n} | {ref_auc[n]:.3f} | {cells} | **{np.mean(list(auc[n].values())):.3f}** |")

    # Combinations: z-scored with conv-42 statistics, signs from conv-42 AUROC, features ranked on conv-42.
    ranked = sorted(names, key=lambda n: -abs(ref_auc[n] - 0.5))
    combos = {}
    for k in COMBO_SIZES:
        combos[f"zsum top-{k} by ref |AUROC-0.5|: " + "+".join(ranked[:k])] = ranked[:k]
    hand = [["nll_sum", "novelty_lex_running"], ["idf_mass_running", "novelty_lex_running"],
            ["nll_tokens_over_5", "idf_mass_running", "novelty_lex_running"],
            ["distinct_content_words", "novelty_lex_running", "has_photo", "is_question"],
            ["nll_sum", "idf_mass_running", "novelty_lex_running", "is_question"],
            ["nll_sum", "first_person", "is_question"],
            ["nll_sum", "first_person", "past_tense", "novelty_lex_running", "is_question"]]
    for combo in hand:
        combos["zsum " + "+".join(combo)] = combo
    lines += ["\n## Combinations: AUROC\n",
              "| score | conv-42 (ref) | " + " | ".join(f"conv-{c}" for c in EVAL_CONVS) + " | mean |",
              "|---|" + "---|" * (len(EVAL_CONVS) + 2)]
    combo_auc = {}
    for label, combo in combos.items():
        ref_val = auroc(zscore_combo(ref_feats, combo, signs, stats), ref_labels)
        vals = {c: auroc(zscore_combo(data[c][0], combo, signs, stats), data[c][1]) for c in EVAL_CONVS}
        combo_auc[label] = vals
        cells = " | ".join(f"{vals[c]:.3f}" for c in EVAL_CONVS)
        lines.append(f"| {label} | {ref_val:.3f} | {cells} | **{np.mean(list(vals.values())):.3f}** |")

    # Logistic regression on all features, trained on conv-42 only.
    def standardized(feats):
        return np.stack([(feats[n] - stats[n][0]) / stats[n][1] for n in names], 1)

    w = fit_logistic(standardized(ref_feats), ref_labels.astype(float))
    lr_scores = {c: standardized(data[c][0]) @ w[:-1] for c in EVAL_CONVS}
    vals = {c: auroc(lr_scores[c], data[c][1]) for c in EVAL_CONVS}
    combo_auc["logistic (all features, trained on conv-42)"] = vals
    lines.append(f"| logistic, all features, trained on conv-42 | (train) | "
                 + " | ".join(f"{vals[c]:.3f}" for c in EVAL_CONVS) + f" | **{np.mean(list(vals.values())):.3f}** |")
    lines.append("\nlogistic weights: " + ", ".join(f"{n} {v:+.2f}" for n, v in zip(names, w)))

    # Coverage of evidence turns when the gate keeps the top fraction of turns.
    best_single = max(names, key=lambda n: np.mean(list(auc[n].values())))
    best_combo = max((k for k in combo_auc if k.startswith("zsum")), key=lambda k: np.mean(list(combo_auc[k].values())))
    lines += ["\n## Evidence-turn coverage when keeping the top fraction of turns\n",
              "| score | conv | top 10% | top 20% | top 40% |", "|---|---|---|---|---|"]
    gate_scores = {}
    for c in EVAL_CONVS:
        feats, labels = data[c]
        for label, score in ((best_single, feats[best_single]),
                             (best_combo, zscore_combo(feats, combos[best_combo], signs, stats)),
                             ("logistic", lr_scores[c])):
            cov = coverage(score, labels)
            lines.append(f"| {label} | {c} | {cov[0.1]:.3f} | {cov[0.2]:.3f} | {cov[0.4]:.3f} |")
        gate_scores[c] = {"best_single": feats[best_single].tolist(),
                          "best_combo": zscore_combo(feats, combos[best_combo], signs, stats).tolist(),
                          "logistic": lr_scores[c].tolist()}
    print("\n".join(lines))
    json.dump({"best_single": best_single, "best_combo": best_combo, "gate_scores": gate_scores},
              open("/tmp/study_cache/study2.json", "w"))


if __name__ == "__main__":
    main()
