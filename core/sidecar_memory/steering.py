"""The self-state and the steering prefix it produces.

The self-state is a handful of running values (recent arousal, recent
conflict, the cues behind them) updated on every turn. The prefix turns it,
together with the top recalled memories, into a short plain-text instruction
a model can follow without any training: for example, to be cautious after
the user mentioned a hazard, or to prefer the newest value of a fact that
just changed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

#: Weight of the newest turn in the running arousal and conflict levels.
SMOOTHING = 0.5
#: Arousal level above which the prefix asks for caution.
CAUTION_LEVEL = 0.25
#: Conflict level above which the prefix points at the updated fact.
UPDATE_LEVEL = 0.25
#: Longest memory text quoted in the prefix.
PREFIX_QUOTE_CHARS = 120


@dataclass
class SelfState:
    """Running affect of the conversation."""

    arousal: float = 0.0
    conflict: float = 0.0
    hazard_cues: list[str] = field(default_factory=list)
    last_update: str = ""

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
        return asdict(self)


def build_prefix(state: SelfState, *, slots_used: int, recalled: int) -> str:
    """Write the steering prefix: what memory holds and how to act on it.

    The recalled memories themselves are listed after the prefix by
    :meth:`Recall.as_text`, so the prefix does not quote them again.
    """
    parts = [f"Memory holds {slots_used} note{'s' if slots_used != 1 else ''} about this user"]
    parts[0] += f"; {recalled} relevant to this message follow." if recalled else "."
    if state.arousal >= CAUTION_LEVEL and state.hazard_cues:
        parts.append(f"Be cautious: the user mentioned {', '.join(state.hazard_cues[:3])}.")
    if state.conflict >= UPDATE_LEVEL and state.last_update:
        parts.append(f'A fact just changed, so use the newest value: "{state.last_update}".')
    return " ".join(parts)
