"""Plain records the engine returns: gate decisions and recalled memories."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class GateDecision:
    """Outcome of gate-and-commit for one observed turn.

    ``S, N, A, C, R`` are the gate's features (surprisal, novelty, arousal,
    conflict, reward), each in ``[0, 1]``. ``G`` is their weighted sum and
    ``tau`` the threshold it was compared with.
    """

    turn: int
    role: str
    text: str
    S: float
    N: float
    A: float
    C: float
    R: float
    G: float
    tau: float
    committed: bool
    slot: int | None = None
    """Slot written by this turn, or ``None`` when the gate did not commit."""
    replaced_slot: int | None = None
    """Slot whose older fact this turn replaced after a detected conflict."""
    bound_turns: tuple[int, ...] = ()
    """Earlier uncommitted turns bound to this commit by eligibility traces."""
    reason: str = ""
    """Short explanation of the decision, for logs and the CLI table."""

    def to_dict(self) -> dict[str, Any]:
        """Return the record as JSON-ready values."""
        return asdict(self)


@dataclass(frozen=True)
class MemoryItem:
    """One recalled memory: the text written into a slot and how well it matches."""

    text: str
    score: float
    """Cosine similarity between the query key and the slot's key, in ``[-1, 1]``."""
    slot: int
    role: str
    turn: int
    """Index of the observed turn that wrote the slot (0 for the first turn)."""
    strength: float
    """Norm of the slot's key column. It grows with writes and shrinks with decay."""
    timestamp: float
    """Unix time of the last write."""
    context: str = ""
    """Text of nearby turns bound to this slot by eligibility traces."""
    bound_turns: tuple[int, ...] = ()
    """Indices of the bound turns."""
    facts: tuple[tuple[str, str, str], ...] = ()
    """``(speaker, attribute, value)`` facts the slot's text states, as conflict detection read them."""


@dataclass(frozen=True)
class Recall:
    """Memories relevant to a query, and the steering prefix built from them."""

    query: str
    prefix: str
    memories: list[MemoryItem] = field(default_factory=list)

    def facts_text(self) -> str:
        """Render the recalled facts as plain statements, most relevant memory first.

        Small models follow "The user's favorite color is green." far more
        reliably than the turn it came from ("Actually, green now, not blue
        anymore"). Returns an empty string when no recalled memory states a fact.
        """
        lines: list[str] = []
        for memory in self.memories:
            for speaker, attribute, value in memory.facts:
                owner = "The user's" if speaker in ("user", "human") else f"{speaker.title()}'s"
                line = f"{owner} {attribute} is {value}."
                if line not in lines:
                    lines.append(line)
        return "\n".join(lines)

    def as_text(self, *, include_prefix: bool = True) -> str:
        """Render the prefix and memories as the text a prompt would carry."""
        lines = [self.prefix] if include_prefix and self.prefix else []
        lines.extend(f"- {m.text}" for m in self.memories)
        return "\n".join(lines)
