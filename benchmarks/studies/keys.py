"""Key encoders compared in study 1: SmolLM2 pooled states, hashed lexical keys, MiniLM, hybrids.

Every builder returns (turn_keys [n_turns, d], query_keys [n_questions, d]) with unit-norm rows.
"Deployable" variants use only constants estimated on the reference conversation (REF_CONV) or on
turns already seen; "peek" variants use statistics of the whole evaluated conversation.
"""

from collections import Counter
from functools import lru_cache

import numpy as np

from common import CACHE_DIR, REF_CONV, content_words, l2norm, load_conversation, stable_hash

GENERIC_IDF_CONVS = (42, 43, 44, 47)


@lru_cache(maxsize=None)
def smol_cache(conv_id):
    return dict(np.load(CACHE_DIR / f"smol_conv-{conv_id}.npz"))


@lru_cache(maxsize=None)
def minilm_cache(conv_id):
    return dict(np.load(CACHE_DIR / f"minilm_conv-{conv_id}.npz"))


@lru_cache(maxsize=None)
def smol_pooled(conv_id, layer, pooling):
    """Pooled SmolLM2 states of layer (0 = embeddings) for turns and questions, float64 [n, 576].

    pooling: "mean" over all tokens, "mean_nofirst" excludes token 0 (which carries the attention-sink
    massive activation), "last" is the last token.
    """
    cache = smol_cache(conv_id)
    out = []
    for side in ("t", "q"):
        mean = cache[f"{side}_mean"][:, layer].astype(np.float64)
        if pooling == "mean":
            out.append(mean)
        elif pooling == "mean_nofirst":
            n = cache[f"{side}_len"][:, None].astype(np.float64)
            first = cache[f"{side}_first"][:, layer].astype(np.float64)
            out.append((n * mean - first) / np.maximum(n - 1, 1))
        elif pooling == "last":
            out.append(cache[f"{side}_last"][:, layer].astype(np.float64))
        else:
            raise ValueError(f"invalid pooling {pooling!r}; use mean, mean_nofirst or last")
    return out[0], out[1]


_SVD_CACHE = {}


def right_singular_vectors(matrix, center):
    """Right singular vectors [k, d] of matrix, memoized per array object (cached arrays are never mutated)."""
    key = (id(matrix), center)
    if key not in _SVD_CACHE:
        x = matrix - matrix.mean(0) if center else matrix
        _SVD_CACHE[key] = (matrix, np.linalg.svd(x, full_matrices=False)[2])
    return _SVD_CACHE[key][1]


def top_direction(matrix, center):
    """First right singular vector of matrix (optionally centered), unit norm [d]."""
    return right_singular_vectors(matrix, center)[0]


def remove_direction(x, u):
    return x - np.outer(x @ u, u)


def normalize_dense(turns, queries, ref_turns, method):
    """Apply one normalization method to dense keys, then L2-normalize.

    ref_turns: the reference conversation's turn vectors, the source of every fixed constant.
    """
    if method == "plain":
        return l2norm(turns), l2norm(queries)
    if method == "center_self":  # peek
        mu = turns.mean(0)
        return l2norm(turns - mu), l2norm(queries - mu)
    if method == "center_running":
        # Each turn is centered on the mean of turns 0..i at write time; queries on the mean of all turns.
        running = np.cumsum(turns, 0) / np.arange(1, len(turns) + 1)[:, None]
        return l2norm(turns - running), l2norm(queries - turns.mean(0))
    if method == "center_running_prior":
        # Running mean that starts from the reference mean (weight 50 turns) so early keys are not zero.
        prior_weight = 50.0
        counts = np.arange(1, len(turns) + 1)[:, None]
        mu_ref = ref_turns.mean(0)
        running = (np.cumsum(turns, 0) + prior_weight * mu_ref) / (counts + prior_weight)
        final = (turns.sum(0) + prior_weight * mu_ref) / (len(turns) + prior_weight)
        return l2norm(turns - running), l2norm(queries - final)
    if method == "center_ref":
        mu = ref_turns.mean(0)
        return l2norm(turns - mu), l2norm(queries - mu)
    if method == "pc1_self":  # peek: top direction of the uncentered turn matrix
        u = top_direction(turns, center=False)
        return l2norm(remove_direction(turns, u)), l2norm(remove_direction(queries, u))
    if method == "pc1_ref":
        u = top_direction(ref_turns, center=False)
        return l2norm(remove_direction(turns, u)), l2norm(remove_direction(queries, u))
    if method == "meandir_ref":
        mu = ref_turns.mean(0)
        u = mu / np.linalg.norm(mu)
        return l2norm(remove_direction(turns, u)), l2norm(remove_direction(queries, u))
    if method == "center_std_ref":
        mu, sd = ref_turns.mean(0), ref_turns.std(0) + 1e-6
        return l2norm((turns - mu) / sd), l2norm((queries - mu) / sd)
    if method.startswith("abtt") and method.endswith("_ref"):
        # All-but-the-top: center on the reference mean and remove its top-k principal directions.
        k = int(method[4:-4])
        mu = ref_turns.mean(0)
        top = right_singular_vectors(ref_turns, center=True)[:k]
        t, q = turns - mu, queries - mu
        return l2norm(t - (t @ top.T) @ top), l2norm(q - (q @ top.T) @ top)
    raise ValueError(f"invalid normalization {method!r}; use one of {DENSE_METHODS}")


DENSE_METHODS = ("plain", "center_self", "center_running", "center_running_prior", "center_ref",
                 "pc1_self", "pc1_ref", "meandir_ref", "center_std_ref", "abtt1_ref", "abtt3_ref")
DEPLOYABLE = {"plain", "center_running", "center_running_prior", "center_ref", "pc1_ref", "meandir_ref",
              "center_std_ref", "abtt1_ref", "abtt3_ref"}


def smol_key(conv_id, layer, pooling, method):
    turns, queries = smol_pooled(conv_id, layer, pooling)
    ref_turns, _ = smol_pooled(REF_CONV, layer, pooling)
    return normalize_dense(turns, queries, ref_turns, method)


def minilm_key(conv_id, method="plain"):
    cache, ref = minilm_cache(conv_id), minilm_cache(REF_CONV)
    return normalize_dense(cache["turns"].astype(np.float64), cache["questions"].astype(np.float64),
                           ref["turns"].astype(np.float64), method)


# ---------------------------------------------------------------- lexical keys

@lru_cache(maxsize=None)
def idf_table(source):
    """IDF over turns: log((N + 1) / (df + 1)) + 1. Returns (dict word -> idf, idf of an unseen word)."""
    if source == "ref":
        conv_ids = (REF_CONV,)
    elif source == "generic":
        conv_ids = GENERIC_IDF_CONVS
    else:
        conv_ids = (int(source),)  # a conversation's own table: peek
    df, n_docs = Counter(), 0
    for conv_id in conv_ids:
        turns, _ = load_conversation(conv_id)
        for turn in turns:
            df.update(set(content_words(turn["text"])))
            n_docs += 1
    return {w: np.log((n_docs + 1) / (c + 1)) + 1 for w, c in df.items()}, np.log(n_docs + 1) + 1


def bag(text, idf_source):
    """TF-IDF weights {word: (1 + log tf) * idf} of a text's content words."""
    idf, idf_unseen = idf_table(idf_source)
    counts = Counter(content_words(text))
    return {w: (1 + np.log(c)) * idf.get(w, idf_unseen) for w, c in counts.items()}


def turn_lexical_text(turn, text_mode):
    """Text fed to the lexical key: "full" includes the "Speaker:" prefix, "noprefix" drops it."""
    if text_mode == "full":
        return turn["text"]
    return turn["text"][len(turn["speaker"]) + 2:]


def running_bags(turns, questions, text_mode):
    """TF-IDF bags with IDF from the turns seen so far (turn i's key is fixed when it is written).

    Questions use the document frequencies of the whole conversation, which are known at query time.
    """
    df, bags = Counter(), []
    for i, turn in enumerate(turns):
        counts = Counter(content_words(turn_lexical_text(turn, text_mode)))
        df.update(set(counts))
        n_docs = i + 1
        bags.append({w: (1 + np.log(c)) * (np.log((n_docs + 1) / (df[w] + 1)) + 1) for w, c in counts.items()})
    n_docs = len(turns)
    for question in questions:
        counts = Counter(content_words(question["question"]))
        bags.append({w: (1 + np.log(c)) * (np.log((n_docs + 1) / (df[w] + 1)) + 1) for w, c in counts.items()})
    return bags


@lru_cache(maxsize=None)
def lexical_key(conv_id, dim, idf_source="ref", n_signs=4, text_mode="full"):
    """Hashed lexical key: each word adds its weight to n_signs hashed positions with hashed signs.

    idf_source: "ref", "generic" (fixed tables), "running" (turns seen so far) or "self" (peek).
    dim=None gives the exact (unprojected) TF-IDF vector over the union vocabulary.
    """
    turns, questions = load_conversation(conv_id)
    if idf_source == "running":
        bags = running_bags(turns, questions, text_mode)
    else:
        source = str(conv_id) if idf_source == "self" else idf_source
        bags = [bag(turn_lexical_text(t, text_mode), source) for t in turns]
        bags += [bag(q["question"], source) for q in questions]
    if dim is None:
        vocab = {w: i for i, w in enumerate(sorted({w for b in bags for w in b}))}
        matrix = np.zeros((len(bags), len(vocab)))
        for row, b in enumerate(bags):
            for w, v in b.items():
                matrix[row, vocab[w]] = v
    else:
        matrix = np.zeros((len(bags), dim))
        scale = 1 / np.sqrt(n_signs)
        for row, b in enumerate(bags):
            for w, v in b.items():
                for seed in range(n_signs):
                    h = stable_hash(w, seed)
                    matrix[row, h % dim] += scale * v * (1 if (h >> 31) & 1 else -1)
    matrix = l2norm(matrix)
    return matrix[: len(turns)], matrix[len(turns):]


# ---------------------------------------------------------------- reductions and hybrids

def pca_reduce(turns, queries, ref_turns, dim):
    """Center on the reference mean and project onto the reference's top-dim principal directions."""
    mu = ref_turns.mean(0)
    basis = right_singular_vectors(ref_turns, center=True)[:dim]
    return l2norm((turns - mu) @ basis.T), l2norm((queries - mu) @ basis.T)


@lru_cache(maxsize=None)
def reduced_smol_key(conv_id, layer, pooling, dim):
    """Standardize with reference mean and std (center_std_ref), then project on the reference's top-dim PCs."""
    turns, queries = smol_pooled(conv_id, layer, pooling)
    ref_turns, _ = smol_pooled(REF_CONV, layer, pooling)
    if dim >= turns.shape[1]:
        return normalize_dense(turns, queries, ref_turns, "center_std_ref")
    mu, sd = ref_turns.mean(0), ref_turns.std(0) + 1e-6
    return pca_reduce((turns - mu) / sd, (queries - mu) / sd, (ref_turns - mu) / sd, dim)


def reduced_minilm_key(conv_id, dim):
    cache, ref = minilm_cache(conv_id), minilm_cache(REF_CONV)
    turns, queries = cache["turns"].astype(np.float64), cache["questions"].astype(np.float64)
    if dim >= turns.shape[1]:
        return l2norm(turns), l2norm(queries)
    return pca_reduce(turns, queries, ref["turns"].astype(np.float64), dim)


def hybrid(dense, lexical, lexical_weight):
    """Concatenate sqrt(1-w)*dense and sqrt(w)*lexical so the inner product is (1-w)cos_d + w cos_l."""
    a, b = np.sqrt(1 - lexical_weight), np.sqrt(lexical_weight)
    return (l2norm(np.hstack([a * dense[0], b * lexical[0]])),
            l2norm(np.hstack([a * dense[1], b * lexical[1]])))


def sparsify(matrix, keep):
    """Keep the keep largest-magnitude components of each row, zero the rest, renormalize."""
    out = np.zeros_like(matrix)
    idx = np.argpartition(-np.abs(matrix), keep - 1, axis=1)[:, :keep]
    rows = np.arange(len(matrix))[:, None]
    out[rows, idx] = matrix[rows, idx]
    return l2norm(out)
