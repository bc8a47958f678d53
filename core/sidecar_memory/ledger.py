"""The slot ledger: the text written to each fast-weight column.

Recall has to return text, not vectors, so every slot carries a bounded
record of what was written there. The ledger has exactly ``rank`` entries,
so its size is bounded by ``rank × (max_text_chars + max_context_chars)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class SlotRecord:
    """Record of the text written to one slot."""

    text: str
    """Text of the turn that first wrote the slot, cut to ``max_text_chars``."""
    role: str
    turn: int
    """Index of the observed turn that first wrote the slot."""
    timestamp: float
    """Unix time of the last write."""
    writes: int = 1
    """Number of writes, counting merges of similar turns into the slot."""
    gate: float = 0.0
    """Gate score ``G`` of the turn that first wrote the slot."""
    context: str = ""
    """Text of turns bound by eligibility traces, cut to ``max_context_chars``."""
    bound_turns: list[int] = field(default_factory=list)
    facts: list[list[str]] = field(default_factory=list)
    """``[attribute, value]`` pairs extracted from the text, for conflict detection."""

    def to_dict(self) -> dict[str, Any]:
        """Return the record as JSON-ready values."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SlotRecord":
        """Build a record from :meth:`to_dict` output."""
        return cls(**data)


def clip_text(text: str, limit: int) -> str:
    """Collapse whitespace and cut text to ``limit`` characters, marking a cut with an ellipsis."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)] + "…"
