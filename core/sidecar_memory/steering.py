"""The self-state and the steering prefix it produces.

The self-state is a handful of running values (recent arousal, recent
conflict, the cues behind them) updated on every turn. The prefix turns it,
together with the top recalled memories, into a short plain-text instruction
that a model can follow without any training. For example, it tells the
model to be cautious after the user mentioned a hazard, or to prefer the
newest value of a fact that just changed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

#: Weight of the newest turn in the running arousal and conflict levels.
SMOOTHING = 0.5
#: Arousal level from which the prefix requests caution.
CAUTION_LEVEL = 0.25
#: Conflict level from which the prefix points at the updated fact.
UPDATE_LEVEL = 0.25
#: Maximum characters of a memory text quoted in the prefix.
PREFIX_QUOTE_CHARS = 120


@dataclass
class SelfState:
    """Running affect of the conversation."""

    arousal: float = 0.0
    """Running arousal level in ``[0, 1]``."""
    conflict: float = 0.0
    """Running conflict level in ``[0, 1]``."""
    hazard_cues: list[str] = field(default_factory=list)
    """Latest arousal cues, newest first, at most 4."""
    last_update: str = ""
    """Start of the latest turn that changed a fact, at most ``PREFIX_QUOTE_CHARS`` characters."""

    def update(self, *, arousal: float, conflict: float, cues: tuple[str, ...], update_text: str | None) -> None:
        """Fold one turn's arousal and conflict into the running levels."""
        self.arousal = (1 - SMOOTHING) * self.arousal + SMOOTHING * arousal
        self.conflict = (1 - SMOOTHING) * self.conflict + SMOOTHING * conflict
        if cues:
            self.hazard_cues = list(dict.fromkeys(list(cues) + self.hazard_cues))[:4]
        elif self.arousal < 0.05:
            self.hazard_cues = []
        if update_text:
            self.last_update = update_text[:PREFIX_QUOTE_CHARS]

    def to_dict(self) -> dict:
        """Return the self-state as JSON-ready values."""
        return asdict(self)


def build_prefix(state: SelfState, *, slots_used: int, recalled: int) -> str:
    """Write the steering prefix: what memory contains and how to act on it.

    The recalled memories themselves are listed after the prefix by
    :meth:`Recall.as_text`, so the prefix does not quote them again.
    """
    plural = "s" if slots_used != 1 else ""
    summary = f"Memory holds {slots_used} note{plural} about this user"
    if recalled:
        summary += f"; {recalled} relevant to this message follow."
    else:
        summary += "."
    parts = [summary]
    if state.arousal >= CAUTION_LEVEL and state.hazard_cues:
        parts.append(f"Be cautious: the user mentioned {', '.join(state.hazard_cues[:3])}.")
    if state.conflict >= UPDATE_LEVEL and state.last_update:
        parts.append(f'A fact just changed, so use the newest value: "{state.last_update}".')
    return " ".join(parts)
