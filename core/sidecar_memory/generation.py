"""Generation with memory: recalled text in the prompt, or prefilled into the KV cache.

``generate_with_memory`` encodes the prompt once, uses that key both to
recall and to gate-and-commit the prompt, and puts the recall into the
system message. ``generate_from_kv`` prefills memory text into a KV cache
that is reused across calls with the same text, then decodes greedily,
optionally restricted to a list of allowed words. Words that take several
tokens are handled by a token trie.
"""

from __future__ import annotations

import copy
import inspect
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from .errors import InvalidInputError

if TYPE_CHECKING:
    from .sidecar import Sidecar


def _chat_ids(tokenizer: Any, messages: list[dict[str, str]], *, add_generation_prompt: bool) -> list[int]:
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    else:
        text = "".join(f"{m['content']}\n\n" for m in messages)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def generate_with_memory(sidecar: "Sidecar", prompt: str, *, max_new_tokens: int, temperature: float, top_p: float,
                         observe: bool, **generate_kwargs: Any) -> str:
    """Recall for ``prompt``, optionally commit it, and sample a reply with the recall as the system message."""
    _check_positive("max_new_tokens", max_new_tokens)
    recalled = sidecar._observe_and_recall(prompt, "user", sidecar.config.generate_memories, observe)
    messages = [{"role": "system", "content": recalled.as_text()}, {"role": "user", "content": prompt}]
    ids = torch.tensor([_chat_ids(sidecar.tokenizer, messages, add_generation_prompt=True)])  # (1, T)
    device = next(sidecar.model.parameters()).device
    sampling = temperature > 0
    options = dict(max_new_tokens=max_new_tokens, do_sample=sampling,
                   pad_token_id=sidecar.tokenizer.pad_token_id or sidecar.tokenizer.eos_token_id)
    if sampling:
        options.update(temperature=temperature, top_p=top_p)
    options.update(generate_kwargs)
    with torch.inference_mode():
        output = sidecar.model.generate(ids.to(device), attention_mask=torch.ones_like(ids).to(device), **options)
    return sidecar.tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=True).strip()


@dataclass
class _TrieNode:
    children: dict[int, "_TrieNode"] = field(default_factory=dict)
    terminal: bool = False


class WordMask:
    """Token mask that allows only token sequences spelling one of the given words.

    Each word is added in up to six spellings (as given, lower-case and
    capitalised, each with and without a leading space), because BPE
    tokenizers encode them differently. After a complete word, decoding may stop or start another
    allowed word.
    """

    def __init__(self, tokenizer: Any, words: list[str], stop_ids: set[int]) -> None:
        cleaned = [w.strip() for w in words if isinstance(w, str) and w.strip()]
        if not cleaned:
            raise InvalidInputError(f"allowed_words must contain at least one non-empty word; got {words!r}")
        self.root = _TrieNode()
        self.stop_ids = stop_ids
        for word in cleaned:
            for variant in {word, word.lower(), word.capitalize()}:
                for spelled in (variant, " " + variant):
                    self._add(tokenizer(spelled, add_special_tokens=False)["input_ids"])
        self.node = self.root

    def _add(self, ids: list[int]) -> None:
        node = self.root
        for token in ids:
            node = node.children.setdefault(token, _TrieNode())
        node.terminal = True

    def allowed(self) -> list[int]:
        """Return the token ids allowed at the current position."""
        tokens = list(self.node.children)
        if self.node.terminal:
            tokens += list(self.stop_ids) + list(self.root.children)
        return tokens

    def advance(self, token: int) -> None:
        """Move along the trie after ``token`` was emitted."""
        if token in self.node.children:
            self.node = self.node.children[token]
        else:
            self.node = self.root.children.get(token, self.root)


class _PrefixCache:
    """The KV cache of the last memory text, so repeated calls skip its prefill."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.key: tuple[int, tuple[int, ...]] | None = None
        self.cache: Any = None


_PREFIX_CACHES: dict[int, _PrefixCache] = {}


def generate_from_kv(model: Any, tokenizer: Any, mem_text: str, prompt: str, *, max_new_tokens: int,
                     stop_on_newline: bool, allowed_words: list[str] | None) -> str:
    """Decode greedily after prefilling ``mem_text`` (as the system message) into the KV cache."""
    for name, value in (("mem_text", mem_text), ("prompt", prompt)):
        if not isinstance(value, str):
            raise InvalidInputError(f"{name} must be a str; got {type(value).__name__}")
    if not prompt.strip():
        raise InvalidInputError("prompt is empty; pass the question to answer")
    _check_positive("max_new_tokens", max_new_tokens)

    system = [{"role": "system", "content": mem_text}]
    full = system + [{"role": "user", "content": prompt}]
    prefix_ids = _chat_ids(tokenizer, system, add_generation_prompt=False)
    full_ids = _chat_ids(tokenizer, full, add_generation_prompt=True)
    if full_ids[: len(prefix_ids)] != prefix_ids:
        # The template joins the messages differently from the prefix alone, so
        # prefill nothing rather than build a misaligned cache.
        prefix_ids = []
    rest_ids = full_ids[len(prefix_ids):]

    device = next(model.parameters()).device
    stop_ids = set()
    for token_id in (tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")):
        if isinstance(token_id, int) and token_id >= 0:
            stop_ids.add(token_id)
    newline_ids = set(tokenizer("\n", add_special_tokens=False)["input_ids"])
    if stop_on_newline:
        stop_ids |= newline_ids
    mask = WordMask(tokenizer, allowed_words, stop_ids) if allowed_words is not None else None

    with torch.inference_mode():
        cache = _prefilled_cache(model, prefix_ids, device)
        input_ids = torch.tensor([rest_ids], device=device)  # (1, T_rest)
        generated: list[int] = []
        for _ in range(max_new_tokens):
            out = model(input_ids=input_ids, use_cache=True, **{_cache_argument(model): cache})
            # transformers 5.x returns the cache as ``cache``; older releases as ``past_key_values``.
            cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
            logits = out.logits[0, -1]  # (vocab,)
            if mask is not None:
                allowed = torch.tensor(mask.allowed(), device=logits.device)
                restricted = torch.full_like(logits, float("-inf"))
                restricted[allowed] = logits[allowed]
                logits = restricted
            token = int(logits.argmax())
            if token in stop_ids:
                break
            generated.append(token)
            if mask is not None:
                mask.advance(token)
            input_ids = torch.tensor([[token]], device=device)
    return tokenizer.decode(generated, skip_special_tokens=True).strip()


def _prefilled_cache(model: Any, prefix_ids: list[int], device: Any) -> Any:
    """Return a private copy of the KV cache for ``prefix_ids``, computing it once per text."""
    from transformers import DynamicCache

    holder = _PREFIX_CACHES.setdefault(id(model), _PrefixCache())
    key = (id(model), tuple(prefix_ids))
    with holder.lock:
        if holder.key != key:
            cache = DynamicCache()
            if prefix_ids:
                model(input_ids=torch.tensor([prefix_ids], device=device), use_cache=True,
                      **{_cache_argument(model): cache})
            holder.key, holder.cache = key, cache
        # Decoding appends to the cache, so each call works on its own copy.
        return copy.deepcopy(holder.cache)


def _cache_argument(model: Any) -> str:
    """Return the name of the forward argument that takes a KV cache.

    transformers 5.25.0 takes ``cache`` and warns on the old name
    ``past_key_values``, which older releases still require.
    """
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name} must be a positive int; got {value!r}")
