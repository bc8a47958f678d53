"""Conflict detection: does a new statement change a fact memory holds?

A small extractor turns first-person statements into ``(attribute, value)``
facts. It knows a few sentence frames ("my X is Y", "I live in / moved to
Y", "I work at Y", "I take N mg", "my X is called Y", "X is on Monday") and a
few value categories whose members name the attribute by themselves (drinks,
diets, colours). Facts are keyed by speaker, so two people in one
conversation never overwrite each other.

A conflict is a new fact with the same speaker and attribute as a stored fact
but a different value. The gate scores it as ``C = 1`` and the engine writes
the new turn over the old slot, so recall returns the new value only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .text import STOPWORDS, stem

COLORS = frozenset(
    "red blue green yellow orange purple pink black white brown gray grey teal turquoise violet "
    "navy maroon beige indigo magenta cyan gold silver lavender".split()
)
DRINKS = frozenset(
    "coffee tea water juice soda milk beer wine whiskey vodka lemonade espresso latte cappuccino "
    "matcha kombucha cola smoothie smoothies cocoa chai".split()
)
DIETS = frozenset(
    "vegetarian vegan pescatarian omnivore carnivore keto paleo gluten-free flexitarian halal kosher".split()
)
WEEKDAYS = frozenset("monday tuesday wednesday thursday friday saturday sunday".split())
_CATEGORY_OF = {**{w: "favorite color" for w in COLORS}, **{w: "drink" for w in DRINKS},
                **{w: "diet" for w in DIETS}}

# Words that end a value phrase: time expressions and fillers that follow the value.
# Last words of "my X" phrases that name a single-valued attribute.
_ATTRIBUTE_HEADS = frozenset(
    "name birthday address email phone number job employer boss company partner wife husband "
    "boyfriend girlfriend doctor dentist hometown city home age dose dosage medication allergy diet "
    "schedule shift day time class practice session lesson appointment meeting gym drink color "
    "colour team car major school username password plan".split()
)
_VALUE_STOP = frozenset(
    "now anymore instead though too either actually currently these days lately since last next "
    "this ago yesterday today tomorrow week month year recently because for with when but".split()
)
_NEGATORS = ("not ", "no more ", "no longer ", "stopped ", "quit ", "gave up ", "from ", "instead of ")
_CHANGE_MARKER = re.compile(r"\b(anymore|no longer|now|instead|switched|changed|these days)\b")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?;])\s+|\n+")
_SPEAKER_PREFIX = re.compile(r"^\s*([A-Z][\w .'-]{0,40}):\s+")
_FIRST_PERSON = re.compile(r"\b(i|i'm|im|i've|my|me|we|we're|our)\b")

# Frames that carry an attribute and a value. Group "attr" may be absent
# when the frame itself names the attribute.
_FRAMES: tuple[tuple[str | None, re.Pattern[str]], ...] = (
    ("name of", re.compile(r"\bmy (?:new |current |real )?(?P<attr>[a-z' ]{2,30}?) (?:is|are|was) (?:called|named) (?P<value>[^,.;!?]+)")),
    (None, re.compile(r"\bmy (?:new |current |real )?(?P<attr>[a-z' ]{2,30}?) (?:is|are|'s) (?:now |actually |still |currently |on |at )*(?P<value>[^,.;!?]+)")),
    ("home", re.compile(r"\b(?:i|we) (?:just |recently |finally |now |have |had )*(?:live|living|am living|'m living|moved|relocated|moving|settled)(?: back)? (?:in|to|into|at) (?P<value>[^,.;!?]+)")),
    ("home", re.compile(r"\b(?:i'm|i am|we're|we are) (?:now |currently )?(?:based|living) in (?P<value>[^,.;!?]+)")),
    ("employer", re.compile(r"\b(?:i|i'm|i am) (?:now |just |recently )*(?:work|working|employed|started working|started a job|started a new job|got a job|joined)(?: at| for| with)? (?P<value>[^,.;!?]+)")),
    ("dose", re.compile(r"\b(?:i take|i'm taking|i am taking|i now take|take|taking|dose is|dosage is|(?:increased|lowered|reduced|raised|changed|upped|cut|bumped)(?: it| me| my dose| the dose)?(?: up| down)? to) (?P<value>\d+(?:\.\d+)? ?(?:mg|milligrams|mcg|ml|units)\b)")),
    (None, re.compile(r"\b(?:i have|i go to|i attend|my) (?:the |my )?(?P<attr>[a-z ]{2,25}?) (?:class |practice |session |lesson |appointment )?(?:is |are )?(?:on|every) (?P<value>(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)s?)")),
)


@dataclass(frozen=True)
class Fact:
    """One attribute-value statement, keyed by who said it."""

    speaker: str
    attribute: str
    value: str

    def as_pair(self) -> list[str]:
        """Return ``[speaker|attribute, value]`` for the ledger."""
        return [f"{self.speaker}|{self.attribute}", self.value]


# Words a question about an attribute tends to use, added to the key of a turn
# stating it: "what do I drink now?" should find "not coffee anymore, tea now".
_ATTRIBUTE_WORDS = {
    "home": "live home city moved",
    "employer": "work job employer company",
    "drink": "drink",
    "diet": "diet eat food",
    "favorite color": "favorite color",
    "dose": "dose take medication",
}


def attribute_words(facts: list[Fact]) -> list[str]:
    """Words that name the attributes of ``facts``, for adding to a key."""
    found = []
    for fact in facts:
        found.extend(_ATTRIBUTE_WORDS.get(fact.attribute, fact.attribute).split())
    return found


def speaker_of(text: str, role: str) -> tuple[str, str]:
    """Split an optional ``"Name: "`` prefix off a turn. Returns ``(speaker, body)``."""
    match = _SPEAKER_PREFIX.match(text)
    if match:
        return match.group(1).strip().lower(), text[match.end():]
    return role.lower(), text


def extract_facts(text: str, role: str) -> list[Fact]:
    """Extract the first-person facts a turn states. Questions state nothing."""
    speaker, body = speaker_of(text, role)
    facts: dict[str, Fact] = {}
    for sentence in _SENTENCE_SPLIT.split(body.lower().replace("’", "'")):
        sentence = sentence.strip()
        if not sentence or sentence.endswith("?"):
            continue
        # A speaker's elliptical update ("not coffee anymore, tea now") is about
        # themselves even without a pronoun; a change marker is evidence of that.
        if not (_FIRST_PERSON.search(sentence) or _CHANGE_MARKER.search(sentence)):
            continue
        for fact in _frame_facts(sentence, speaker) + _category_facts(sentence, speaker):
            facts.setdefault(fact.attribute, fact)
    return list(facts.values())


def _frame_facts(sentence: str, speaker: str) -> list[Fact]:
    found = []
    for fixed_attribute, pattern in _FRAMES:
        for match in pattern.finditer(sentence):
            raw_attribute = match.groupdict().get("attr") or ""
            if fixed_attribute is None and not _is_attribute(raw_attribute):
                continue
            if fixed_attribute == "name of":
                attribute = _normalise_attribute(raw_attribute) + " name"
            else:
                attribute = fixed_attribute or _normalise_attribute(raw_attribute)
            value = _normalise_value(match.group("value"))
            if attribute and value:
                found.append(Fact(speaker, attribute, value))
    return found


def _category_facts(sentence: str, speaker: str) -> list[Fact]:
    """Facts named by category words: 'I drink tea now', 'I'm vegan', 'not coffee anymore'."""
    kept: dict[str, str] = {}
    for match in re.finditer(r"[a-z-]+", sentence):
        word = match.group(0)
        category = _CATEGORY_OF.get(word)
        if category is None:
            continue
        before = sentence[max(0, match.start() - 12): match.start()]
        if any(before.endswith(neg) or f"{neg}" in before[-len(neg) - 1:] for neg in _NEGATORS):
            continue
        after = sentence[match.end(): match.end() + 10]
        if after.startswith(" anymore") or after.startswith(" no more"):
            continue
        # The last affirmed member wins: "switched from coffee to tea" -> tea.
        kept[category] = word
    return [Fact(speaker, category, value) for category, value in kept.items()]


def _is_attribute(raw_attribute: str) -> bool:
    """Accept "my X is Y" only where X names a single-valued personal attribute.

    "My kids are excited" describes a mood, not a fact that a later "my kids
    are tired" should overwrite, so open-ended subjects are ignored.
    """
    words = raw_attribute.replace("favourite", "favorite").split()
    if not words:
        return False
    return words[0] in {"favorite", "fav"} or words[-1] in _ATTRIBUTE_HEADS or words[-1].endswith("name")


def _normalise_attribute(raw: str) -> str:
    raw = raw.replace("favourite", "favorite").replace("fav ", "favorite ")
    terms = [w for w in raw.split() if w not in {"new", "current", "real", "the", "a"}]
    if terms and terms[-1] in {"dose", "dosage"}:
        # "my lisinopril dose" and "I take 20 mg" describe one attribute.
        return "dose"
    if len(terms) > 1 and terms[-1] in {"day", "days", "time"}:
        # "my gym day is Friday" and "I go to the gym on Mondays" share one attribute.
        terms = terms[:-1]
    return " ".join(stem(w) for w in terms)


def _normalise_value(raw: str) -> str:
    kept = []
    for word in raw.strip().split():
        word = word.strip("'\"")
        if word in _VALUE_STOP or (kept and word in STOPWORDS and word not in {"of", "de"}):
            break
        if word in {"a", "an", "the"} and not kept:
            continue
        kept.append(word)
        if len(kept) == 4:
            break
    return " ".join(stem(w) for w in kept)


def conflicting_slots(new_facts: list[Fact], slot_facts: dict[int, list[list[str]]]) -> dict[int, Fact]:
    """Map each slot holding a stale value of a new fact's attribute to that new fact."""
    by_key = {f.as_pair()[0]: f for f in new_facts}
    stale: dict[int, Fact] = {}
    for slot, pairs in slot_facts.items():
        for key, value in pairs:
            fact = by_key.get(key)
            if fact is not None and fact.value != value:
                stale[slot] = fact
    return stale
