"""The gate: score a turn and decide whether to commit it.

``G = wS·S + wN·N + wA·A + wC·C + wR·R`` with every feature in ``[0, 1]``:

* ``S`` surprisal. Measured on LoCoMo, the LM's mean NLL per token ranks
  the turns that later questions depend on below chance, because short
  generic turns ("Thanks!") are the least predictable per token. What does
  predict them is how much new content a turn carries and its place in the
  dialogue. The information part of ``S`` is a logistic score of four
  measured features. They are the total information of the turn's content
  words under the memory's running unigram model (their summed IDF, in
  nats), the number of first-person words, whether the turn answers a
  question, and whether it is itself a question. Its weights are a logistic-regression fit
  on LoCoMo conversations 26 and 30 (see ``SidecarConfig.s_weights``). A
  turn that states a personal fact ("my favorite color is ...") gets
  ``s_fact_weight`` more, because that is what a memory is asked about
  later. LoCoMo has too few such turns to fit that weight, so it is set by
  hand and checked by the knowledge-update benchmark. In ``blend`` mode the
  score is mixed with novelty.
* ``N`` novelty: ``1 - cos(k, r)`` where ``r = V a`` is what memory
  reconstructs for the key. An empty memory gives ``N = 1``.
* ``A`` arousal and ``R`` reward come from :mod:`sidecar_memory.affect`,
  and ``C`` conflict from :mod:`sidecar_memory.conflict`.

The threshold adapts. After ``min_events`` turns (and at least 2) it is the
running mean of ``G`` plus ``tau_k`` standard deviations (Welford's
algorithm), and before that it is ``warmup_tau``. A set ``fixed_tau``
overrides both.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

from .config import SidecarConfig


@dataclass
class GateStats:
    """Running count, mean and sum of squared deviations of ``G``."""

    count: int = 0
    """Number of gate scores added."""
    mean: float = 0.0
    """Running mean of ``G``."""
    m2: float = 0.0
    """Sum of squared deviations from the running mean (Welford's ``M2``)."""
    commits: int = 0
    """Number of committed turns."""

    def update(self, g: float) -> None:
        """Add one gate score (Welford's online update)."""
        self.count += 1
        delta = g - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (g - self.mean)

    @property
    def std(self) -> float:
        """Sample standard deviation of ``G``, or 0 before the second score."""
        if self.count < 2:
            return 0.0
        return math.sqrt(self.m2 / (self.count - 1))

    def to_dict(self) -> dict[str, float]:
        """Return the statistics as JSON-ready values."""
        return asdict(self)


@dataclass(frozen=True)
class Features:
    """Gate features of one turn: surprisal ``S``, novelty ``N``, arousal ``A``,
    conflict ``C`` and reward ``R``, each in ``[0, 1]``."""

    S: float
    N: float
    A: float
    C: float
    R: float


_FIRST_PERSON = re.compile(r"\b(?:i|i'm|i've|i'd|i'll|my|me|mine|we|our|us)\b", re.IGNORECASE)
#: Maximum number of first-person words that count toward ``S``. Further ones add nothing.
MAX_FIRST_PERSON = 4


@dataclass(frozen=True)
class DialogueCues:
    """Text features of a turn that the information score uses."""

    first_person: int
    is_question: bool


def dialogue_cues(body: str) -> DialogueCues:
    """Count first-person words and check whether the turn ends with a question."""
    first_person = _FIRST_PERSON.findall(body.replace("’", "'"))
    is_question = body.rstrip().endswith("?")
    return DialogueCues(len(first_person), is_question)


def information_score(information_nats: float, cues: DialogueCues, *, answers_question: bool,
                      states_fact: bool, config: SidecarConfig) -> float:
    """Compute a probability-like score in ``(0, 1)`` that a turn carries information worth keeping."""
    w_info, w_person, w_answer, w_question = config.s_weights
    logit = (config.s_bias
             + w_info * math.log1p(max(information_nats, 0.0))
             + w_person * min(cues.first_person, MAX_FIRST_PERSON)
             + w_answer * float(answers_question)
             + w_question * float(cues.is_question)
             + config.s_fact_weight * float(states_fact))
    return 1.0 / (1.0 + math.exp(-logit))


def surprisal(information: float, novelty: float, config: SidecarConfig) -> float:
    """Combine the information score and novelty into ``S`` according to ``s_mode``."""
    if config.s_mode == "nll":
        return information
    if config.s_mode == "novelty":
        return novelty
    return config.s_alpha * information + (1.0 - config.s_alpha) * novelty


def novelty(cos_key_reconstruction: float | None) -> float:
    """Compute novelty ``N`` from the cosine between a key and its reconstruction.

    ``None`` means an empty memory, which gives ``N = 1``.
    """
    if cos_key_reconstruction is None:
        return 1.0
    return min(max(1.0 - cos_key_reconstruction, 0.0), 1.0)


def score(features: Features, config: SidecarConfig) -> float:
    """Compute the weighted sum ``G`` of the features."""
    ws, wn, wa, wc, wr = config.affect_weights
    return ws * features.S + wn * features.N + wa * features.A + wc * features.C + wr * features.R


def threshold(stats: GateStats, config: SidecarConfig) -> float:
    """Return the threshold ``tau`` that the next turn's ``G`` must exceed."""
    if config.fixed_tau is not None:
        return config.fixed_tau
    if stats.count < max(config.min_events, 2):
        return config.warmup_tau
    return stats.mean + config.tau_k * stats.std
