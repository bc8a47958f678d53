"""The slot ledger: which text each fast-weight column holds.

Recall has to return text, not vectors, so every slot carries a bounded
record of what was written there. The ledger has exactly ``rank`` entries,
so its size is bounded by ``rank × (max_text_chars + max_context_chars)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class SlotRecord:
    """What one slot holds."""

    text: str
    role: str
    turn: int
    timestamp: float
    writes: int = 1
    gate: float = 0.0
    """Gate score ``G`` of the turn that first wrote the slot."""
    context: str = ""
    bound_turns: list[int] = field(default_factory=list)
    facts: list[list[str]] = field(default_factory=list)
    """``[attribute, value]`` pairs extracted from the text, for conflict detection."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SlotRecord":
        return cls(**data)


def clip_text(text: str, limit: int) -> str:
    """Cut text to ``limit`` characters, marking the cut with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"
