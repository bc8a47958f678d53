"""Models shared by every workload of a run, loaded once, and the peer line-up built on them."""

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from benchmarks.peers import (
    LangChainStorePeer,
    LlamaIndexVectorPeer,
    MemoryPeer,
    MiniLMEncoder,
    SidecarPeer,
    WindowPeer,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeerSpec:
    """How to build one peer. ``family`` groups peers in tables and plots across budgets.

    ``budget`` is the number of slots or items the peer may keep, or None when it keeps every turn.
    """

    family: str
    budget: int | None
    build: Callable[[], MemoryPeer]
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.family if self.budget is None else f"{self.family} @{self.budget}"


class Resources:
    """Lazily loaded language model, tokenizer and MiniLM encoder for one benchmark run.

    ``model_path`` names a local Hugging Face model folder; None loads the embedded SmolLM2-135M-Instruct
    through ``sidecar_memory.load_default_model``. A caller that has already loaded a model passes it with its
    tokenizer instead.
    """

    def __init__(self, model_path: str | None = None, *, model: Any = None, tokenizer: Any = None):
        if (model is None) != (tokenizer is None):
            raise ValueError("pass model and tokenizer together, or neither to load them lazily")
        self.model_path = model_path
        self._model: Any = model
        self._tokenizer: Any = tokenizer
        self._encoder: MiniLMEncoder | None = None

    def _load_model(self) -> None:
        import sidecar_memory

        if self.model_path is None:
            logger.info("loading the embedded SmolLM2 model")
            self._model, self._tokenizer = sidecar_memory.load_default_model()
        else:
            logger.info("loading model from %s", self.model_path)
            self._model, self._tokenizer = sidecar_memory.load_model(self.model_path)

    @property
    def model(self) -> Any:
        if self._model is None:
            self._load_model()
        return self._model

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._load_model()
        return self._tokenizer

    @property
    def encoder(self) -> MiniLMEncoder:
        """Caching MiniLM encoder shared by all vector-store peers of the run."""
        if self._encoder is None:
            logger.info("loading all-MiniLM-L6-v2")
            self._encoder = MiniLMEncoder(cache=True)
        return self._encoder

    def count_tokens(self, text: str) -> int:
        """Number of tokens of ``text`` under the language model's tokenizer, without special tokens."""
        if not text:
            return 0
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def sidecar_spec(self, budget: int, key_mode: str | None = None) -> PeerSpec:
        """Sidecar with ``rank=budget``; ``key_mode=None`` keeps the engine's default key mode."""
        overrides = {} if key_mode is None else {"key_mode": key_mode}
        family = "sidecar" if key_mode is None else f"sidecar key_mode={key_mode}"
        return PeerSpec(
            family,
            budget,
            lambda: SidecarPeer(self.model, self.tokenizer, rank=budget, name=f"{family} @{budget}", **overrides),
            options={"rank": budget, **overrides},
        )

    def baseline_specs(self, budget: int | None) -> list[PeerSpec]:
        """Budgeted baselines for ``budget``, or the uncapped ones for ``budget=None``."""
        encoder = self.encoder
        if budget is None:
            return [
                PeerSpec("langchain uncapped", None, lambda: LangChainStorePeer(encoder, None)),
                PeerSpec("llamaindex uncapped", None, lambda: LlamaIndexVectorPeer(encoder)),
            ]
        return [
            PeerSpec("langchain FIFO", budget, lambda: LangChainStorePeer(encoder, budget), {"capacity": budget}),
            PeerSpec("window", budget, lambda: WindowPeer(budget), {"size": budget}),
        ]

    def peer_specs(self, budgets: list[int], key_modes: list[str | None]) -> list[PeerSpec]:
        """Build the full line-up: sidecars for every key mode and budget, budgeted baselines, uncapped stores."""
        specs = []
        for key_mode in key_modes:
            specs.extend(self.sidecar_spec(budget, key_mode) for budget in budgets)
        for budget in budgets:
            specs.extend(self.baseline_specs(budget))
        specs.extend(self.baseline_specs(None))
        return specs
