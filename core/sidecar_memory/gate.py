"""The gate: score a turn and decide whether to commit it.

``G = wS·S + wN·N + wA·A + wC·C + wR·R`` with every feature in ``[0, 1]``:

* ``S`` surprisal. Measured on LoCoMo, the LM's mean NLL per token ranks
  the turns that later questions depend on below chance, because short
  generic turns ("Thanks!") are the least predictable per token. What does
  predict them is how much new content a turn carries and its place in the
  dialogue. The information part of ``S`` is a logistic score of four
  measured features: the total information of the turn's content words
  under the memory's running unigram model (their summed IDF, in nats), the
  number of first-person words, whether the turn answers a question, and
  whether it is itself a question. Its weights are a logistic-regression fit
  on LoCoMo conversations 26 and 30 (see ``SidecarConfig.s_weights``). A
  turn that states a personal fact ("my favorite color is ...") gets
  ``s_fact_weight`` more, because that is what a memory is asked about
  later; LoCoMo has too few such turns to fit that weight, so it is set by
  hand and checked by the knowledge-update benchmark. In ``blend`` mode the
  score is mixed with novelty.
* ``N`` novelty: ``1 - cos(k, r)`` where ``r = V a`` is what memory
  reconstructs for the key. An empty memory gives ``N = 1``.
* ``A`` arousal and ``R`` reward come from :mod:`sidecar_memory.affect`;
  ``C`` conflict from :mod:`sidecar_memory.conflict`.

The threshold adapts: after ``min_events`` turns it is the running mean of
``G`` plus ``tau_k`` standard deviations (Welford's algorithm), before that
``warmup_tau``; ``fixed_tau`` overrides both.
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
    mean: float = 0.0
    m2: float = 0.0
    commits: int = 0

    def update(self, g: float) -> None:
        """Add one gate score (Welford's online update)."""
        self.count += 1
        delta = g - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (g - self.mean)

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else 0.0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class Features:
    """The five gate features of one turn, each in ``[0, 1]``."""

    S: float
    N: float
    A: float
    C: float
    R: float


_FIRST_PERSON = re.compile(r"\b(?:i|i'm|i've|i'd|i'll|my|me|mine|we|our|us)\b", re.IGNORECASE)
#: Largest first-person count that still adds to ``S``.
MAX_FIRST_PERSON = 4


@dataclass(frozen=True)
class DialogueCues:
    """Text features of a turn that the information score uses."""

    first_person: int
    is_question: bool


def dialogue_cues(body: str) -> DialogueCues:
    """Count first-person words and check whether the turn ends with a question."""
    return DialogueCues(len(_FIRST_PERSON.findall(body.replace("’", "'"))), body.rstrip().endswith("?"))


def information_score(information_nats: float, cues: DialogueCues, *, answers_question: bool,
                      states_fact: bool, config: SidecarConfig) -> float:
    """Probability-like score in ``(0, 1)`` that a turn carries information worth keeping."""
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
    """Novelty from the cosine between a key and its reconstruction (``None``: empty memory)."""
    if cos_key_reconstruction is None:
        return 1.0
    return min(max(1.0 - cos_key_reconstruction, 0.0), 1.0)


def score(features: Features, config: SidecarConfig) -> float:
    """Weighted sum ``G`` of the features."""
    ws, wn, wa, wc, wr = config.affect_weights
    return ws * features.S + wn * features.N + wa * features.A + wc * features.C + wr * features.R


def threshold(stats: GateStats, config: SidecarConfig) -> float:
    """The threshold ``tau`` the next turn's ``G`` must exceed."""
    if config.fixed_tau is not None:
        return config.fixed_tau
    if stats.count < max(config.min_events, 2):
        return config.warmup_tau
    return stats.mean + config.tau_k * stats.std
