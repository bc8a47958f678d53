"""Conflict detection: whether a new statement changes a fact that memory stores.

A small extractor turns first-person statements into ``(attribute, value)``
facts. It recognises a few sentence frames ("my X is Y", "I live in / moved to
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
    "navy maroon beige indigo magenta cyan gold silver lavender amber crimson scarlet olive "
    "emerald coral ivory burgundy mint peach charcoal".split()
)
DRINKS = frozenset(
    "coffee tea water juice soda milk beer wine whiskey vodka lemonade espresso latte cappuccino "
    "matcha kombucha cola smoothie smoothies cocoa chai americano mocha".split()
) | {"hot chocolate", "green tea", "iced tea", "oat milk", "sparkling water"}
DIETS = frozenset(
    "vegetarian vegan pescatarian omnivore carnivore keto paleo gluten-free flexitarian halal kosher "
    "mediterranean low-carb low-fat dairy-free".split()
)
FOODS = frozenset(
    "sushi pizza tacos taco ramen lasagna curry pho falafel paella dumplings burgers burger pasta "
    "steak salad noodles burritos burrito risotto kebab gnocchi biryani enchiladas pancakes "
    "waffles bibimbap moussaka goulash".split()
)
MUSIC = frozenset(
    "jazz rock pop techno folk blues classical hip-hop rap metal country reggae punk soul funk "
    "disco house edm indie opera k-pop r&b ambient".split()
)
WEEKDAYS = frozenset("monday tuesday wednesday thursday friday saturday sunday".split())
_CATEGORY_OF = {
    **{w: "favorite color" for w in COLORS}, **{w: "drink" for w in DRINKS},
    **{w: "diet" for w in DIETS}, **{w: "favorite food" for w in FOODS}, **{w: "music" for w in MUSIC},
}
# Food and music words also appear in plain anecdotes ("we had pizza"), so they
# count as a preference only next to one of these words.
_PREFERENCE_CUE = re.compile(
    r"\b(favou?rite|lov\w*|like|prefer\w*|pick|best|into|go-to|obsessed|listen\w*|playlists?|put on|"
    r"could eat|beats|every day|every single day|order|fan|crave|all about)\b", re.IGNORECASE
)
_NEEDS_PREFERENCE = {"favorite food", "music"}
# Topic words that tie a weekday, a clock time or an amount to one attribute.
_TOPIC_VALUES = (
    ("gym day", re.compile(r"\b(gym|work ?out|train|training|exercise|lift)\b", re.I),
     re.compile(r"\b(monday|tuesday|wednesday|thursday|friday|saturday|sunday)s?\b", re.I)),
    ("meeting time", re.compile(r"\b(meeting|sync|standup|stand-up|call)\b", re.I),
     re.compile(r"\b(\d{1,2}(?::\d{2})?\s?(?:am|pm)|noon|midnight)\b", re.I)),
    ("dose", re.compile(r"\b(dose|dosage|mg|pill|prescription|medication|milligrams)\b", re.I),
     re.compile(r"\b(\d+(?:\.\d+)?\s?(?:mg|milligrams|mcg|ml))\b", re.I)),
)
_NAME = r"(?P<value>[A-Z][\w'-]+(?: [A-Z][\w'-]+){0,3})"
# Frames for open-class values (places, employers, names), matched on the
# original text so that the value is a capitalised name.
_NAMED_FRAMES = (
    ("home", re.compile(r"\b(?i:live|living|moved|relocated|moving|settled|based|apartment is|house is|home is|"
                        r"home for me is|i'm|i am|we're|we are)(?i: back)?(?i: now)? (?i:in|to|into|at) " + _NAME)),
    ("home", re.compile(r"\b(?i:home for me is|home is now|home is|i'm now in|i am now in|i'm in|i am in) " + _NAME)),
    ("home", re.compile(r"\b(?i:moved|relocated|moving)\b[^.]*?\b(?i:to) " + _NAME)),
    ("employer", re.compile(r"\b(?i:work|working|employed|job is|job|first day|started|hired|joined|position)"
                            r"(?i: at| for| with| by)? " + _NAME)),
    ("employer", re.compile(r"\b(?i:i'm|i am|i've been)\b[^.,]*?\b(?i:at|for) " + _NAME)),
    ("pet name", re.compile(r"\b(?i:dog|cat|puppy|kitten|pet|bird|rabbit|hamster)(?i:'s name)?(?i: is)?"
                            r"(?i: called| named)? " + _NAME)),
    ("pet name", re.compile(r"\b(?i:dog|cat|puppy|kitten|pet)\b[^.]*?\b(?i:called|named|answers to|goes by) "
                            + _NAME)),
    ("pet name", re.compile(_NAME + r",? (?:is )?(?:my|our) (?:new )?(?:dog|cat|puppy|kitten|pet)\b")),
    ("partner name", re.compile(r"\b(?i:partner|wife|husband|girlfriend|boyfriend|fianc[eé]e?|spouse)(?i:'s name)?"
                                r"(?i: is)?(?i: now)? " + _NAME)),
    ("partner name", re.compile(r"\b(?i:seeing|dating|married|marrying|engaged to|i'm with|i am with) " + _NAME)),
    ("partner name", re.compile(_NAME + r" and I (?:live together|are (?:partners|together|married|engaged))")),
)
# Words that cannot be a place, employer or name even when capitalised.
_NOT_A_NAME = frozenset("I I'm The A An My Our We It This That Monday Tuesday Wednesday Thursday Friday "
                        "Saturday Sunday Now Actually Also And But So Meet Say Walking Honestly Lately".split())

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
_NEGATORS = ("not ", "no more ", "no longer ", "stopped ", "quit ", "gave up ", "from ", "instead of ", "over ",
             "not into ", "away from ")
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
    """One attribute-value statement, keyed by its speaker."""

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
    """Return the words that name the attributes of ``facts``, for adding to a key."""
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
    for sentence in _SENTENCE_SPLIT.split(body.replace("’", "'")):
        sentence = sentence.strip()
        if not sentence or sentence.endswith("?"):
            continue
        lowered = sentence.lower()
        # Schedules and doses are stated impersonally ("the team meeting is at 8 am").
        found = _topic_facts(sentence, speaker)
        # A speaker's elliptical update ("not coffee anymore, tea now") is about
        # themselves even without a pronoun, and a change marker is evidence of that.
        if _FIRST_PERSON.search(lowered) or _CHANGE_MARKER.search(lowered):
            found += _frame_facts(lowered, speaker) + _category_facts(lowered, speaker) + _named_facts(sentence, speaker)
        for fact in found:
            facts[fact.attribute] = fact  # A later sentence restates the newer value.
    return list(facts.values())


def _frame_facts(sentence: str, speaker: str) -> list[Fact]:
    found = []
    for fixed_attribute, pattern in _FRAMES:
        for match in pattern.finditer(sentence):
            raw_attribute = match.groupdict().get("attr") or ""
            if fixed_attribute is None and not _is_attribute(raw_attribute):
                continue
            if fixed_attribute == "name of":
                attribute = _canonical_attribute(_normalise_attribute(raw_attribute) + " name")
            else:
                attribute = _canonical_attribute(fixed_attribute or _normalise_attribute(raw_attribute))
            value = _normalise_value(match.group("value"))
            if attribute and value:
                found.append(Fact(speaker, attribute, value))
    return found


def _category_facts(sentence: str, speaker: str) -> list[Fact]:
    """Facts named by category words: 'I drink tea now', 'I'm vegan', 'not coffee anymore'."""
    kept: dict[str, str] = {}
    preference = bool(_PREFERENCE_CUE.search(sentence))
    for match in re.finditer(r"[a-z&-]+(?: (?:chocolate|tea|milk|water)\b)?", sentence):
        word = match.group(0)
        category = _CATEGORY_OF.get(word) or _CATEGORY_OF.get(word.split(" ")[0])
        if category is None:
            continue
        if category != _CATEGORY_OF.get(word):
            word = word.split(" ")[0]
        if category in _NEEDS_PREFERENCE and not preference:
            continue
        if _negated(sentence, match.start(), match.start() + len(word)):
            continue
        # The last affirmed member wins: "switched from coffee to tea" -> tea.
        kept[category] = word
    return [Fact(speaker, category, value) for category, value in kept.items()]


def _topic_facts(sentence: str, speaker: str) -> list[Fact]:
    """Weekdays, clock times and amounts tied to a topic word: 'gym is on Friday now'."""
    found = []
    for attribute, topic, value_pattern in _TOPIC_VALUES:
        if not topic.search(sentence):
            continue
        values = [m for m in value_pattern.finditer(sentence) if not _negated(sentence.lower(), m.start(), m.end())]
        if values:
            found.append(Fact(speaker, attribute, " ".join(values[-1].group(1).lower().split())))
    return found


def _named_facts(sentence: str, speaker: str) -> list[Fact]:
    """Places, employers and names, which no lexicon can list."""
    found: dict[str, str] = {}
    for attribute, pattern in _NAMED_FRAMES:
        for match in pattern.finditer(sentence):
            words = [w for w in match.group("value").split() if w not in _NOT_A_NAME and not w.endswith("ing")]
            if not words or _negated(sentence.lower(), match.start("value"), match.end("value")):
                continue
            found[attribute] = " ".join(words).lower()
    return [Fact(speaker, attribute, value) for attribute, value in found.items()]


def _negated(sentence: str, start: int, end: int) -> bool:
    """Check whether the words around ``sentence[start:end]`` deny it ("not coffee", "tea anymore")."""
    # Take the last few words of the same clause, cut at word boundaries so
    # that "whenever" is not read as "never".
    clause = re.split(r"[,.;]|\band\b|\bbut\b", sentence[:start].lower())[-1]
    before = " ".join(clause.split()[-5:]) + " "
    after = sentence[end: end + 12].lower()
    if any(before.endswith(negator) for negator in _NEGATORS):
        return True
    if re.search(r"\b(?:don't|do not|no longer|not|never|quit|stopped|left)\b", before):
        return True
    return after.startswith(" anymore") or after.startswith(" no more") or after.startswith(" to ")


def _is_attribute(raw_attribute: str) -> bool:
    """Accept "my X is Y" only where X names a single-valued personal attribute.

    "My kids are excited" describes a mood, not a fact that a later "my kids
    are tired" should overwrite, so open-ended subjects are ignored.
    """
    words = raw_attribute.replace("favourite", "favorite").split()
    if not words:
        return False
    return words[0] in {"favorite", "fav"} or words[-1] in _ATTRIBUTE_HEADS or words[-1].endswith("name")


def _canonical_attribute(attribute: str) -> str:
    """Map frame attributes onto the category names ("favorit color" -> "favorite color")."""
    words = attribute.replace("favorit ", "favorite ").split()
    if words and words[0] == "favorite" and len(words) > 1:
        return {"colour": "favorite color", "dish": "favorite food", "meal": "favorite food",
                "song": "music", "band": "music", "genre": "music"}.get(words[-1], "favorite " + words[-1])
    if words and words[-1] in {"partner", "wife", "husband", "girlfriend", "boyfriend"}:
        return "partner name"
    if words and words[-1] in {"job", "company", "employer"}:
        return "employer"
    return attribute


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
    """Map each slot that stores a stale value of a new fact's attribute to that new fact."""
    by_key = {f.as_pair()[0]: f for f in new_facts}
    stale: dict[int, Fact] = {}
    for slot, pairs in slot_facts.items():
        for key, value in pairs:
            fact = by_key.get(key)
            if fact is not None and fact.value != value:
                stale[slot] = fact
    return stale
