"""Configuration of one sidecar memory.

All sizes are fixed when the memory is created and are saved with its state:
a reloaded memory keeps the sizes it was written with.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import InvalidInputError

#: Allowed values of :attr:`SidecarConfig.key_mode`.
KEY_MODES = ("hybrid", "hidden", "lexical")
#: Allowed values of :attr:`SidecarConfig.s_mode`.
S_MODES = ("blend", "nll", "novelty")

DEFAULT_HAZARD_WORDS = (
    "danger", "dangerous", "hazard", "warning", "emergency", "fire", "burn", "poison",
    "toxic", "allergic", "allergy", "anaphylaxis", "overdose", "bleeding", "injury",
    "injured", "accident", "crash", "collapse", "heatstroke", "dehydration", "hypothermia",
    "frostbite", "flood", "storm", "hurricane", "tornado", "earthquake", "avalanche",
    "lethal", "deadly", "fatal", "risk", "unsafe", "careful", "caution", "seizure",
    "stroke", "chest pain", "can't breathe", "cannot breathe", "snake", "venom", "gun",
    "weapon", "explosion", "gas leak", "carbon monoxide", "insulin", "epipen",
)
DEFAULT_INTENSIFIERS = (
    "very", "extremely", "really", "so", "incredibly", "terribly", "seriously",
    "absolutely", "totally", "super", "insanely", "awfully", "urgent", "urgently",
    "immediately", "critical", "never", "always",
)
DEFAULT_NOTABLE_PLACES = (
    "death valley", "sahara", "everest", "k2", "antarctica", "arctic", "chernobyl",
    "fukushima", "amazon", "mojave", "atacama", "gobi", "denali", "kilimanjaro",
    "grand canyon", "dead sea", "siberia", "mariana trench", "yellowstone",
)
DEFAULT_REWARD_CUES = (
    "remember this", "remember that", "don't forget", "do not forget", "important:",
    "important to me", "keep in mind", "note that", "make a note", "never forget",
    "for the record", "please remember",
)


@dataclass(frozen=True)
class SidecarConfig:
    """Sizes, gains and lexicons of one memory.

    Build one with keyword arguments, or start from the defaults and change a
    few fields with :meth:`replace`. Invalid values raise
    :class:`~sidecar_memory.errors.InvalidInputError` naming the field.
    """

    d_key: int = 1024
    """Width of a key and of each fast-weight column."""
    rank: int = 64
    """Number of slots: columns of ``U`` and ``V``. This is the memory budget."""
    key_mode: str = "hybrid"
    """Key source of a turn: ``hidden`` (LM hidden states), ``lexical``
    (hashed content words) or ``hybrid`` (both, concatenated)."""
    key_layer: int = 6
    """Hidden layer whose token states are mean-pooled into the key. Negative
    values count from the last layer. Chosen by measurement on LoCoMo."""
    hidden_share: float = 0.5
    """Share of ``d_key`` given to the hidden-state part in ``hybrid`` mode."""
    hidden_weight: float = 0.3
    """Weight of the hidden-state part against the lexical part in ``hybrid`` mode."""
    key_topk: int | None = None
    """Number of largest-magnitude entries kept in a written key, or ``None`` to
    keep the key dense. Sparse writes interfere less, but cost recall."""
    projection_seed: int = 1234
    """Seed of the fixed random projection from hidden size to ``d_key``."""
    max_key_tokens: int = 256
    """Maximum number of tokens of a turn that the encoder reads. Longer turns are truncated."""

    decay: float = 0.999
    """Factor applied to every column of ``U`` and ``V`` at each commit."""
    eta0: float = 0.1
    """Base write gain. A commit writes with gain ``eta0 * G``."""
    temp: float = 0.1
    """Softmax temperature ``T`` of the read ``a = softmax(Uᵀk / T)``."""
    merge_threshold: float = 0.92
    """Cosine above which a new key reinforces the slot it matches instead of
    taking a new one."""

    affect_weights: tuple[float, float, float, float, float] = (1.0, 0.5, 0.6, 1.0, 1.0)
    """Gate weights ``(wS, wN, wA, wC, wR)`` of surprisal, novelty, arousal,
    conflict and reward."""
    fixed_tau: float | None = None
    """A fixed gate threshold. ``None`` uses the adaptive one."""
    tau_k: float = 0.0
    """Adaptive threshold: running mean of ``G`` plus ``tau_k`` standard deviations."""
    min_events: int = 2
    """Turns seen before the adaptive threshold replaces ``warmup_tau``."""
    warmup_tau: float = 0.90
    """Threshold used during the first ``min_events`` turns."""
    s_mode: str = "nll"
    """Surprisal: ``nll`` uses the information score (built on the summed
    negative log-likelihood of the turn's words under the memory's unigram
    model), ``novelty`` uses novelty alone, ``blend`` mixes the two."""
    s_alpha: float = 0.6
    """Weight of the information score in ``blend`` mode."""
    s_weights: tuple[float, float, float, float] = (0.954, 0.14, 0.919, -0.25)
    """Logistic weights of the information score's features: log(1 + information
    in nats), first-person words (at most 4), answers a question, is a question.
    Fit by logistic regression on LoCoMo conversations 26 and 30 with
    ``python -m benchmarks.studies.gate_fit``."""
    s_bias: float = -5.215
    """Logistic intercept of the information score."""
    s_fact_weight: float = 3.0
    """Logistic weight added when a turn states a personal fact (set by hand, not fit)."""

    trace_turns: int = 3
    """Eligibility window in turns: uncommitted turns this recent are bound to the next commit."""
    trace_seconds: float = 300.0
    """Eligibility window in seconds."""
    trace_decay: float = 0.5
    """Weight of a bound turn's key per turn of distance."""

    max_text_chars: int = 600
    """Maximum characters of text kept per slot in the ledger. Longer turns are
    cut, so the state stays bounded."""
    max_context_chars: int = 300
    """Maximum characters of bound (eligibility-trace) turn text kept per slot."""
    max_input_chars: int = 200_000
    """Maximum length, in characters, of a turn accepted by ``observe``. Longer
    input raises :class:`~sidecar_memory.errors.InvalidInputError`."""
    recall_k: int = 5
    """Default number of memories returned by ``recall``."""
    generate_memories: int = 3
    """Number of memories ``generate`` puts in the system message. Each costs prompt tokens."""

    hazard_words: tuple[str, ...] = DEFAULT_HAZARD_WORDS
    """Words and phrases that raise arousal."""
    intensifiers: tuple[str, ...] = DEFAULT_INTENSIFIERS
    """Words that raise arousal a little."""
    notable_places: tuple[str, ...] = DEFAULT_NOTABLE_PLACES
    """Places whose mention raises arousal."""
    reward_cues: tuple[str, ...] = DEFAULT_REWARD_CUES
    """Phrases that raise reward: a user asking to remember something."""

    def __post_init__(self) -> None:
        _check_int("d_key", self.d_key, minimum=16)
        _check_int("rank", self.rank, minimum=1)
        _check_choice("key_mode", self.key_mode, KEY_MODES)
        _check_choice("s_mode", self.s_mode, S_MODES)

        _check_range("hidden_share", self.hidden_share, 0.0, 1.0, open_low=True, open_high=True)
        _check_range("hidden_weight", self.hidden_weight, 0.0, 1.0)
        _check_range("decay", self.decay, 0.0, 1.0, open_low=True)
        _check_range("eta0", self.eta0, 0.0, 10.0, open_low=True)
        _check_range("temp", self.temp, 0.0, 100.0, open_low=True)
        _check_range("merge_threshold", self.merge_threshold, 0.0, 1.0)
        _check_range("s_alpha", self.s_alpha, 0.0, 1.0)

        _check_numbers("s_weights", self.s_weights, 4)
        object.__setattr__(self, "s_weights", tuple(float(w) for w in self.s_weights))
        _check_range("s_bias", self.s_bias, -1e3, 1e3)
        _check_range("s_fact_weight", self.s_fact_weight, -1e3, 1e3)

        _check_range("warmup_tau", self.warmup_tau, 0.0, 1e6)
        _check_range("trace_decay", self.trace_decay, 0.0, 1.0)
        _check_range("trace_seconds", self.trace_seconds, 0.0, 1e9)
        _check_int("trace_turns", self.trace_turns, minimum=0)
        _check_int("min_events", self.min_events, minimum=0)
        _check_int("max_key_tokens", self.max_key_tokens, minimum=1)
        _check_int("max_text_chars", self.max_text_chars, minimum=1)
        _check_int("max_context_chars", self.max_context_chars, minimum=0)
        _check_int("max_input_chars", self.max_input_chars, minimum=1)
        _check_int("recall_k", self.recall_k, minimum=1)
        _check_int("generate_memories", self.generate_memories, minimum=1)

        if self.key_topk is not None:
            _check_int("key_topk", self.key_topk, minimum=1)
        if self.fixed_tau is not None:
            _check_range("fixed_tau", self.fixed_tau, -1e6, 1e6)

        _check_numbers("affect_weights", self.affect_weights, 5)
        object.__setattr__(self, "affect_weights", tuple(float(w) for w in self.affect_weights))

        for name in ("hazard_words", "intensifiers", "notable_places", "reward_cues"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise InvalidInputError(
                    f"{name} must be a sequence of strings, got {value!r}; pass a tuple or list of str"
                )
            object.__setattr__(self, name, tuple(v.lower() for v in value))

    @property
    def d_hidden_part(self) -> int:
        """Width of the hidden-state part of a key."""
        if self.key_mode == "hidden":
            return self.d_key
        if self.key_mode == "lexical":
            return 0
        return max(1, int(round(self.d_key * self.hidden_share)))

    def replace(self, **changes: Any) -> "SidecarConfig":
        """Return a copy with some fields changed, validated like a new config."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise InvalidInputError(
                f"unknown SidecarConfig field(s) {unknown}; "
                f"valid fields are {sorted(f.name for f in dataclasses.fields(self))}"
            )
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as JSON-ready values."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SidecarConfig":
        """Build a config from :meth:`to_dict` output, ignoring fields this version lacks."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in names}
        return cls(**values)


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _check_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInputError(f"{name} must be an integer >= {minimum}; got {value!r}")


def _check_numbers(name: str, value: Any, count: int) -> None:
    ok = isinstance(value, (tuple, list)) and len(value) == count
    if ok:
        ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    if not ok:
        raise InvalidInputError(f"{name} must be {count} finite numbers; got {value!r}")


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InvalidInputError(f"{name} must be one of {allowed}; got {value!r}")


def _check_range(
    name: str,
    value: Any,
    low: float,
    high: float,
    *,
    open_low: bool = False,
    open_high: bool = False,
) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        above_low = value > low if open_low else value >= low
        below_high = value < high if open_high else value <= high
        ok = above_low and below_high
    if not ok:
        low_bracket = "(" if open_low else "["
        high_bracket = ")" if open_high else "]"
        raise InvalidInputError(
            f"{name} must be a number in {low_bracket}{low}, {high}{high_bracket}; got {value!r}"
        )
