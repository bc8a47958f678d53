"""Arousal and reward: the gate's lexical features of urgency and importance.

Arousal rises with hazard words, intensifiers, shouting (capitals and
exclamation marks), numbers that are extreme for their unit and mentions of
notable dangerous places. Reward rises when the user requests that something
be remembered. Both return a score in ``[0, 1]`` and the cues that produced it,
which the steering prefix reuses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .config import SidecarConfig

# (pattern, threshold test) per unit. A value is extreme when the test holds.
_UNIT_PATTERNS: tuple[tuple[str, re.Pattern[str], object], ...] = (
    ("°F", re.compile(r"(-?\d+(?:\.\d+)?)\s*(?:°\s*f\b|degrees? f(?:ahrenheit)?\b|fahrenheit)", re.I),
     lambda x: x >= 100 or x <= 10),
    ("°C", re.compile(r"(-?\d+(?:\.\d+)?)\s*(?:°\s*c\b|degrees? c(?:elsius)?\b|celsius)", re.I),
     lambda x: x >= 38 or x <= -12),
    ("mph", re.compile(r"(\d+(?:\.\d+)?)\s*(?:mph|miles per hour)", re.I), lambda x: x >= 80),
    ("km/h", re.compile(r"(\d+(?:\.\d+)?)\s*(?:km/h|kph|kilometers per hour)", re.I), lambda x: x >= 130),
    ("km", re.compile(r"(\d+(?:\.\d+)?)\s*(?:km|kilomet(?:er|re)s?)\b(?!/)", re.I), lambda x: x >= 100),
    ("miles", re.compile(r"(\d+(?:\.\d+)?)\s*miles?\b(?! per)", re.I), lambda x: x >= 60),
    ("$", re.compile(r"\$\s?(\d+(?:,\d{3})*(?:\.\d+)?)\s*(k|thousand|million|m|billion)?\b", re.I), None),
    ("hours", re.compile(r"(\d+(?:\.\d+)?)\s*(?:hours?|hrs?)\b", re.I), lambda x: x >= 16),
)
_MULTIPLIERS = {"k": 1e3, "thousand": 1e3, "m": 1e6, "million": 1e6, "billion": 1e9}
_DOLLAR_EXTREME = 10_000.0


@dataclass(frozen=True)
class AffectSignal:
    """Affect score in ``[0, 1]`` with the cues behind it."""

    score: float
    cues: tuple[str, ...] = field(default_factory=tuple)


def _phrase_hits(lowered: str, phrases: tuple[str, ...]) -> list[str]:
    hits = []
    for phrase in phrases:
        if re.search(r"(?<!\w)" + re.escape(phrase) + r"(?!\w)", lowered):
            hits.append(phrase)
    return hits


def extreme_numbers(text: str) -> list[str]:
    """Return the numbers with units in ``text`` that are extreme for their unit, as written."""
    found = []
    for unit, pattern, is_extreme in _UNIT_PATTERNS:
        for match in pattern.finditer(text):
            value = float(match.group(1).replace(",", ""))
            if unit == "$":
                multiplier = _MULTIPLIERS.get((match.group(2) or "").lower(), 1.0)
                extreme = value * multiplier >= _DOLLAR_EXTREME
            else:
                extreme = is_extreme(value)
            if extreme:
                found.append(match.group(0).strip())
    return found


def arousal(text: str, config: SidecarConfig) -> AffectSignal:
    """Score how alarming or intense a turn is."""
    lowered = text.lower()
    hazards = _phrase_hits(lowered, config.hazard_words)
    places = _phrase_hits(lowered, config.notable_places)
    intensifiers = _phrase_hits(lowered, config.intensifiers)
    numbers = extreme_numbers(text)
    letters = [c for c in text if c.isalpha()]
    caps_words = [w for w in text.split() if len(w) >= 3 and w.isupper() and w.isalpha()]
    exclamations = text.count("!")

    score = 0.35 * min(len(hazards), 2)
    score += 0.3 * min(len(places), 1)
    score += 0.3 * min(len(numbers), 2)
    score += 0.05 * min(len(intensifiers), 3)
    score += 0.1 * min(exclamations, 3)
    if letters and len(caps_words) >= 2:
        score += 0.2

    cues = tuple(hazards + places + numbers)
    return AffectSignal(min(score, 1.0), cues)


def reward_cues(text: str, config: SidecarConfig) -> AffectSignal:
    """Score explicit requests to remember something ("remember this", "important:")."""
    hits = _phrase_hits(text.lower(), config.reward_cues)
    return AffectSignal(1.0 if hits else 0.0, tuple(hits))
