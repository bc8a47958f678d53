"""Key encoder: the conversion of one turn of text into a key vector.

A key has up to two parts, concatenated and L2-normalised:

* hidden part: the LM's token states at ``key_layer``, mean-pooled over the
  turn, minus a calibration mean (the dominant direction every pooled state
  shares), normalised, then projected to its width by a fixed Gaussian matrix.
  Measured on LoCoMo with SmolLM2-135M, last-token states retrieve no better
  than chance, while centred mean-pooled middle layers do far better.
* lexical part: content words, stemmed and hashed with a sign into buckets,
  weighted by inverse document frequency from a fixed-size count sketch that
  the memory updates as it reads.

The projection and calibration mean are part of the saved state, so a memory
reloaded in a new process reads with exactly the keys it wrote with.
"""

from __future__ import annotations

import logging
import math
import threading
import weakref
from dataclasses import dataclass
from typing import Any

import torch

from .config import SidecarConfig
from .errors import InvalidInputError
from .text import content_terms, stable_hash

logger = logging.getLogger(__name__)

#: Signed buckets each content term is hashed into.
LEXICAL_HASHES = 4
#: Buckets of the document-frequency sketch used for IDF weights.
DF_BUCKETS = 1 << 14

# Varied everyday sentences. Their mean pooled state is the direction that all
# pooled states share, which swamps cosine similarity unless removed.
_CALIBRATION_TEXTS = (
    "I went for a walk in the park this morning.",
    "Do you want to grab dinner later this week?",
    "My sister just started a new job at the hospital.",
    "The weather has been terrible, it rained all weekend.",
    "I'm reading a book about the history of Rome.",
    "We adopted a puppy last month and she is adorable.",
    "Can you remind me what time the meeting starts?",
    "I've been learning to play the guitar since spring.",
    "Our team won the game on Saturday!",
    "The kids painted pictures of the ocean at school.",
    "I think I need a vacation somewhere warm.",
    "She told me the concert was sold out.",
    "Thanks for the advice, it really helped.",
    "I finally fixed the leaking kitchen sink.",
    "What kind of music do you listen to?",
    "My grandparents are visiting from Ohio next week.",
    "I ran my first 10k race and finished in 55 minutes.",
    "That restaurant downtown has amazing tacos.",
    "I'm nervous about my exam on Friday.",
    "We planted tomatoes and basil in the garden.",
    "Have you seen the new science fiction movie?",
    "I volunteer at the animal shelter on weekends.",
    "The train was delayed for almost an hour.",
    "I love hiking in the mountains with friends.",
)


class _StopForward(Exception):
    """Raised by a forward hook to end the forward pass once the key layer is computed."""


@dataclass(frozen=True)
class TurnFeatures:
    """LM output for one turn: the pooled key-layer state and the token count."""

    pooled: torch.Tensor
    """Mean of the key layer's token states, shape ``(hidden_size,)``."""
    n_tokens: int
    """Number of tokens of the turn after truncation to ``max_key_tokens``."""


def hidden_size_of(model: Any) -> int:
    """Return the width of the model's hidden states.

    Read from the input embedding matrix, which every causal LM has, rather
    than from a config field whose name differs by architecture (``n_embd``
    on GPT-2, ``hidden_size`` on Llama and NeoX).
    """
    embeddings = model.get_input_embeddings()
    if embeddings is not None and hasattr(embeddings, "weight"):
        return int(embeddings.weight.shape[-1])
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    for name in ("hidden_size", "n_embd", "d_model"):
        if getattr(config, name, None):
            return int(getattr(config, name))
    raise InvalidInputError(
        f"cannot determine the hidden size of model {type(model).__name__}: it has no input embedding weight "
        "and no hidden_size, n_embd or d_model config field; pass a Hugging Face causal LM"
    )


def _decoder_layers(model: Any) -> torch.nn.ModuleList | None:
    """Find the list of transformer blocks, whatever the architecture calls it."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    count = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return module
    return None


class HiddenStateReader:
    """Reader that runs the frozen LM on one text and mean-pools the states of one layer.

    The forward pass stops right after the key layer, so an observe costs a
    fraction of one full forward pass.
    """

    def __init__(self, model: Any, tokenizer: Any, *, layer: int, max_tokens: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.hidden_size = hidden_size_of(model)
        self._layers = _decoder_layers(model)
        n_layers = len(self._layers) if self._layers is not None else model.config.num_hidden_layers
        resolved = layer if layer >= 0 else n_layers + 1 + layer
        if not 0 <= resolved <= n_layers:
            raise InvalidInputError(
                f"key_layer must be in [-{n_layers + 1}, {n_layers}] for this {n_layers}-layer model; got {layer}"
            )
        self.layer = resolved
        self.device = next(model.parameters()).device
        # Only one forward pass at a time per model, because the forward hook
        # registered on the key layer is shared state.
        self._lock = threading.Lock()

    @torch.inference_mode()
    def read(self, text: str) -> TurnFeatures:
        """Encode one text and return its pooled key-layer state and token count."""
        encoded = self.tokenizer(text, return_tensors="pt", truncation=True, max_length=self.max_tokens)
        input_ids = encoded["input_ids"].to(self.device)  # (1, T)
        if input_ids.shape[1] == 0:
            raise InvalidInputError(f"text {text[:40]!r} produced no tokens; pass text with at least one word")
        with self._lock:
            states = self._run_to_layer(input_ids)  # (1, T, H)
        tokens = states[0].float()  # (T, H)
        # The first position is an attention sink with outsized activations in
        # most decoder LMs, so averaging it in drowns the content of short turns.
        if tokens.shape[0] > 1:
            tokens = tokens[1:]
        pooled = tokens.mean(dim=0).cpu()  # (H,)
        return TurnFeatures(pooled=pooled, n_tokens=int(input_ids.shape[1]))

    def _run_to_layer(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.layer == 0:
            return self.model.get_input_embeddings()(input_ids)
        if self._layers is None:
            out = self.model(input_ids=input_ids, output_hidden_states=True, use_cache=False)
            return out.hidden_states[self.layer]
        captured: list[torch.Tensor] = []

        def hook(_module: Any, _inputs: Any, output: Any) -> None:
            captured.append(output[0] if isinstance(output, tuple) else output)
            raise _StopForward

        handle = self._layers[self.layer - 1].register_forward_hook(hook)
        try:
            self.model(input_ids=input_ids, use_cache=False)
        except _StopForward:
            pass
        finally:
            handle.remove()
        return captured[0]


class KeyEncoder:
    """Encoder that maps turns to keys of width ``d_key``. The module docstring describes the parts."""

    def __init__(self, model: Any, tokenizer: Any, config: SidecarConfig) -> None:
        self.config = config
        self.reader = HiddenStateReader(model, tokenizer, layer=config.key_layer, max_tokens=config.max_key_tokens)
        self.d_hidden = config.d_hidden_part
        self.d_lexical = config.d_key - self.d_hidden
        self.calibration_mean, self.calibration_std = self._calibration_stats()  # (H,), (H,)
        self.projection = self._projection()  # (H, d_hidden)

    def _calibration_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        size = self.reader.hidden_size
        if self.d_hidden == 0:
            return torch.zeros(size), torch.ones(size)
        pooled = torch.stack([self.reader.read(text).pooled for text in _CALIBRATION_TEXTS])  # (n, H)
        # A few dimensions carry most of the variance of every pooled state, so
        # dividing by the per-dimension spread keeps them from dominating cosine.
        std = pooled.std(dim=0)
        return pooled.mean(dim=0), std.clamp_min(float(std.median()) * 0.1)

    def _projection(self) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.config.projection_seed)
        matrix = torch.randn(self.reader.hidden_size, max(self.d_hidden, 1), generator=generator)  # (H, d_hidden)
        return matrix / math.sqrt(max(self.d_hidden, 1))

    def hidden_key(self, pooled: torch.Tensor, *, mean: torch.Tensor, std: torch.Tensor,
                   projection: torch.Tensor) -> torch.Tensor:
        """Standardise, normalise and project a pooled state. Returns shape ``(d_hidden,)``."""
        centred = (pooled - mean) / std  # (H,)
        centred = centred / centred.norm().clamp_min(1e-8)
        return centred @ projection  # (d_hidden,)

    def lexical_key(self, terms: list[str], idf: "DocumentFrequency") -> torch.Tensor:
        """Hash weighted content terms into ``d_lexical`` signed buckets. Returns shape ``(d_lexical,)``."""
        vector = torch.zeros(max(self.d_lexical, 1))
        counts: dict[str, int] = {}
        for term in terms:
            counts[term] = counts.get(term, 0) + 1
        buckets = max(self.d_lexical, 1)
        for term, count in counts.items():
            weight = (1.0 + math.log(count)) * idf.weight(term)
            # Each term lands in several signed buckets, so one collision
            # blurs a fraction of its weight instead of all of it.
            for copy in range(LEXICAL_HASHES):
                h = stable_hash(f"{copy}:{term}")
                sign = 1.0 if (h >> 63) & 1 else -1.0
                vector[h % buckets] += sign * weight
        return vector

    def combine(self, hidden: torch.Tensor | None, lexical: torch.Tensor | None) -> torch.Tensor:
        """Concatenate the normalised parts with their weights. Returns a unit vector of shape ``(d_key,)``."""
        parts = []
        if self.d_hidden:
            weight = 1.0 if self.d_lexical == 0 else self.config.hidden_weight
            parts.append(weight * _unit(hidden))
        if self.d_lexical:
            weight = 1.0 if self.d_hidden == 0 else 1.0 - self.config.hidden_weight
            parts.append(weight * _unit(lexical))
        return _unit(torch.cat(parts))


class DocumentFrequency:
    """Document frequencies of hashed terms in a fixed-size count sketch.

    Collisions only ever overestimate a count, so a rare term can look more
    common than it is but never rarer.
    """

    def __init__(self, counts: torch.Tensor | None = None, documents: int = 0) -> None:
        self.counts = counts if counts is not None else torch.zeros(DF_BUCKETS)  # (DF_BUCKETS,)
        self.documents = documents

    def add(self, terms: list[str]) -> None:
        """Count one document's distinct terms."""
        for term in set(terms):
            self.counts[stable_hash(term) % DF_BUCKETS] += 1.0
        self.documents += 1

    def weight(self, term: str) -> float:
        """Return the smoothed inverse document frequency of a term, at least 1 for a term never seen."""
        df = float(self.counts[stable_hash(term) % DF_BUCKETS])
        return math.log((self.documents + 2.0) / (df + 1.0)) + 1.0


def _unit(vector: torch.Tensor) -> torch.Tensor:
    return vector / vector.norm().clamp_min(1e-8)


_ENCODERS: "weakref.WeakKeyDictionary[Any, dict[tuple, KeyEncoder]]" = weakref.WeakKeyDictionary()
_ENCODERS_LOCK = threading.Lock()


def shared_encoder(model: Any, tokenizer: Any, config: SidecarConfig) -> KeyEncoder:
    """Return one encoder per model and key settings, so many memories share its calibration."""
    key = (id(tokenizer), config.key_mode, config.d_key, config.hidden_share, config.key_layer,
           config.projection_seed, config.max_key_tokens, config.hidden_weight)
    with _ENCODERS_LOCK:
        per_model = _ENCODERS.setdefault(model, {})
        if key not in per_model:
            per_model[key] = KeyEncoder(model, tokenizer, config)
        return per_model[key]


def turn_terms(text: str) -> list[str]:
    """Return the content terms of a turn, as used for lexical keys and information content."""
    return content_terms(text)
