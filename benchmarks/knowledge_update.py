"""Knowledge-update scenarios: a user's fact changes amid chatter, then a probe question requests its current value.

Every scenario is generated from a seed, so the same seed always gives the same set. A scenario spans two
or three sessions: the original statement, 3-10 chatter turns, an update (a quarter of the scenarios
update twice), a little more chatter, and a probe question that is not observed. Phrasings vary: some
updates carry an explicit change marker ("actually", "now", "anymore", "switched", "moved"), others just
state the new value. Value pools of different attributes share no words, and chatter names no value,
so matching a value in retrieved text identifies the statement it came from.
"""

import random
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchmarks.resources import PeerSpec, Resources

DEFAULT_SEED = 20240611
DEFAULT_COUNT = 220


@dataclass(frozen=True)
class Attribute:
    """One kind of user fact with its values and phrasings. ``{v}`` marks the value, ``{old}`` the stale one."""

    name: str
    values: tuple[str, ...]
    statements: tuple[str, ...]
    updates: tuple[str, ...]
    probes: tuple[str, ...]


ATTRIBUTES = (
    Attribute(
        "favorite color",
        ("blue", "green", "crimson", "purple", "amber", "teal", "lavender", "maroon", "turquoise", "beige"),
        (
            "My favorite color is {v}.",
            "I've always loved the color {v}, it's my favorite.",
            "If I had to pick one color it would be {v}.",
            "Most of my clothes are {v} because that's the color I like best.",
        ),
        (
            "Actually, my favorite color is {v} now.",
            "I'm not into {old} anymore, these days I like {v} best.",
            "My favorite color changed to {v}.",
            "Lately {v} has become my favorite color.",
            "I repainted my bedroom {v}, it's my favorite color at this point.",
        ),
        (
            "What is my favorite color now?",
            "Which color do I like best these days?",
            "Remind me, what's my favorite color?",
        ),
    ),
    Attribute(
        "favorite food",
        ("sushi", "pizza", "tacos", "ramen", "lasagna", "curry", "pho", "falafel", "paella", "dumplings"),
        (
            "My favorite food is {v}.",
            "I could eat {v} every single day.",
            "Nothing beats {v} for dinner in my opinion.",
            "Whenever we go out I order {v}, it's my favorite dish.",
        ),
        (
            "I switched from {old} to {v} as my favorite food.",
            "Honestly {v} is my favorite food now.",
            "I don't really crave {old} anymore, I'm all about {v}.",
            "My new favorite dish is {v}.",
            "These days I'd pick {v} over anything else to eat.",
        ),
        (
            "What is my favorite food now?",
            "Which dish do I like most these days?",
            "What's my favorite thing to eat?",
        ),
    ),
    Attribute(
        "drink",
        ("coffee", "matcha", "espresso", "hot chocolate", "kombucha", "sparkling water", "lemonade", "chai"),
        (
            "I start every morning with a cup of {v}.",
            "My go-to drink is {v}.",
            "I drink {v} pretty much every day.",
            "You'll always find me with {v} in hand.",
        ),
        (
            "I switched from {old} to {v} in the mornings.",
            "I quit {old}, now it's {v} for me.",
            "My go-to drink is {v} these days.",
            "I don't drink {old} anymore, I have {v} instead.",
            "Every morning I have {v} now.",
        ),
        (
            "What is my go-to drink now?",
            "What do I drink in the mornings these days?",
            "Which drink do I usually have?",
        ),
    ),
    Attribute(
        "music",
        ("jazz", "hip hop", "classical", "country", "techno", "reggae", "folk", "heavy metal", "k-pop", "blues"),
        (
            "I mostly listen to {v}.",
            "My favorite kind of music is {v}.",
            "{v} is what I put on when I want to relax.",
            "I've been a {v} fan since high school.",
        ),
        (
            "I've switched to listening to {v} mostly.",
            "I'm not that into {old} anymore, I listen to {v} now.",
            "My favorite music is {v} these days.",
            "Lately my playlists are all {v}.",
            "Actually I've gotten really into {v} and it's my favorite now.",
        ),
        (
            "What kind of music do I listen to now?",
            "What's my favorite music these days?",
            "Which genre do I like most?",
        ),
    ),
    Attribute(
        "home city",
        ("Lisbon", "Denver", "Osaka", "Toronto", "Nairobi", "Austin", "Krakow", "Melbourne", "Seattle", "Dublin"),
        (
            "I live in {v}.",
            "Home for me is {v}.",
            "I've been living in {v} for a few years.",
            "My apartment is in {v}.",
        ),
        (
            "I moved from {old} to {v} last month.",
            "I live in {v} now.",
            "We relocated to {v}, so that's home these days.",
            "I don't live in {old} anymore, I'm in {v}.",
            "My new apartment is in {v}.",
        ),
        (
            "Which city do I live in now?",
            "Where is my home these days?",
            "What city am I living in?",
        ),
    ),
    Attribute(
        "pet name",
        ("Biscuit", "Luna", "Pepper", "Milo", "Ziggy", "Nala", "Oscar", "Mochi", "Rufus", "Clover"),
        (
            "My dog is called {v}.",
            "I have a dog named {v}.",
            "{v} is my dog, he's the sweetest.",
            "Walking {v}, my dog, is the best part of my day.",
        ),
        (
            "We renamed the dog, he's called {v} now.",
            "After {old} passed away we adopted a new dog named {v}.",
            "My dog's name is {v} these days, the old name never stuck.",
            "Meet {v}, my new dog.",
            "Actually the dog answers to {v} now.",
        ),
        (
            "What is my dog's name now?",
            "What's my dog called?",
            "Remind me of my dog's name.",
        ),
    ),
    Attribute(
        "partner name",
        ("Priya", "Marcus", "Elena", "Tomas", "Aisha", "Jonah", "Mei", "Rafael", "Ingrid", "Kofi"),
        (
            "My partner's name is {v}.",
            "I've been dating {v} for two years.",
            "{v} and I live together, we're partners.",
            "My partner {v} is a great cook.",
        ),
        (
            "{old} and I broke up, and now I'm seeing {v}.",
            "My partner is {v} now.",
            "I'm not with {old} anymore, my new partner is {v}.",
            "I've started dating {v}, it's getting serious.",
            "My boyfriend situation changed, I'm with {v} these days.",
        ),
        (
            "What is my partner's name now?",
            "Who am I dating these days?",
            "Remind me, who is my partner?",
        ),
    ),
    Attribute(
        "gym day",
        ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
        (
            "I go to the gym every {v}.",
            "{v} is my gym day.",
            "My workout day is {v}.",
            "I always hit the gym on {v} evenings.",
        ),
        (
            "I moved my gym day from {old} to {v}.",
            "My gym day is {v} now.",
            "I don't work out on {old} anymore, I go on {v}.",
            "These days I train on {v}.",
            "Gym is on {v} from now on.",
        ),
        (
            "Which day do I go to the gym now?",
            "What's my gym day these days?",
            "When do I work out each week?",
        ),
    ),
    Attribute(
        "meeting time",
        ("8 am", "9:30 am", "10 am", "11:15 am", "1 pm", "2:30 pm", "3 pm", "4:45 pm"),
        (
            "My weekly team meeting is at {v}.",
            "We have our team meeting every week at {v}.",
            "The weekly team sync starts at {v}.",
            "I block {v} every week for the team meeting.",
        ),
        (
            "The team meeting moved from {old} to {v}.",
            "Our weekly meeting is at {v} now.",
            "The team meeting isn't at {old} anymore, it starts at {v}.",
            "We rescheduled the weekly sync to {v}.",
            "Heads up for future reference, the team meeting is at {v}.",
        ),
        (
            "What time is my weekly team meeting now?",
            "When does the team meeting start these days?",
            "At what time is our weekly sync?",
        ),
    ),
    Attribute(
        "medication dose",
        ("5 mg", "10 mg", "20 mg", "25 mg", "40 mg", "50 mg", "75 mg", "100 mg"),
        (
            "I take {v} of lisinopril each morning.",
            "My blood pressure pill dose is {v}.",
            "The doctor has me on {v} of lisinopril.",
            "I'm on lisinopril, {v} a day.",
        ),
        (
            "My doctor changed my lisinopril dose from {old} to {v}.",
            "I take {v} of lisinopril now.",
            "I'm not on {old} anymore, the dose is {v}.",
            "The new prescription says {v} of lisinopril daily.",
            "After the checkup my blood pressure dose became {v}.",
        ),
        (
            "What dose of lisinopril do I take now?",
            "How much lisinopril am I on these days?",
            "What's my blood pressure medication dose?",
        ),
    ),
    Attribute(
        "diet",
        ("vegetarian", "vegan", "keto", "pescatarian", "gluten-free", "paleo", "low-carb", "Mediterranean"),
        (
            "I follow a {v} diet.",
            "I've been eating {v} for a while.",
            "My diet is {v}.",
            "I keep things {v} when it comes to food.",
        ),
        (
            "I switched from {old} to a {v} diet.",
            "I'm not {old} anymore, I eat {v} now.",
            "My diet is {v} these days.",
            "My nutritionist put me on a {v} plan.",
            "Actually I've gone {v}.",
        ),
        (
            "What diet do I follow now?",
            "How do I eat these days?",
            "What's my current diet?",
        ),
    ),
    Attribute(
        "employer",
        (
            "Acme Robotics",
            "Northwind Bank",
            "Bluefin Labs",
            "Greenleaf Foods",
            "Orbital Media",
            "Harbor Health",
            "Summit Logistics",
            "Pinecrest Software",
        ),
        (
            "I work at {v}.",
            "My employer is {v}.",
            "I've been at {v} for three years.",
            "I'm an analyst at {v}.",
        ),
        (
            "I left {old} and joined {v}.",
            "I work at {v} now.",
            "I'm not at {old} anymore, I started at {v}.",
            "My new job is at {v}.",
            "Last week was my first day at {v}.",
        ),
        (
            "Where do I work now?",
            "Who is my employer these days?",
            "Which company do I work for?",
        ),
    ),
)

USER_CHATTER = (
    "The weather has been so unpredictable this week.",
    "I finally finished that novel I was reading.",
    "Traffic on the way home was terrible today.",
    "Do you have any tips for sleeping better?",
    "I watched a documentary about octopuses last night.",
    "My neighbor is renovating and it's loud all day.",
    "I'm thinking about learning to play the guitar.",
    "Work has been pretty hectic lately.",
    "We had a picnic in the park over the weekend.",
    "I need to buy a birthday present for my niece.",
    "My laptop keeps freezing when I open too many tabs.",
    "I tried a new hiking trail and got a little lost.",
    "Can you suggest a good podcast for long drives?",
    "I spent the whole weekend cleaning the garage.",
    "My sister is visiting next month.",
    "I've been trying to drink more water.",
    "The power went out for an hour yesterday.",
    "I started a small herb garden on the balcony.",
    "I keep forgetting to call my grandmother back.",
    "Our office got new chairs and they're very comfortable.",
    "I'm planning a trip to the mountains in the autumn.",
    "The bakery down the street closed, which is a shame.",
    "I stayed up too late watching a series again.",
    "My car needs an oil change soon.",
    "I'm reorganizing my bookshelf by color of the spines.",
    "A friend recommended a board game called Azul.",
    "I bumped into an old classmate at the grocery store.",
    "My phone screen cracked when I dropped it.",
    "I've been journaling every night before bed.",
    "The kids next door were selling lemon bars.",
    "I want to get better at budgeting.",
    "It rained all day so I stayed in and read.",
    "I signed up for a pottery class.",
    "The train was delayed by forty minutes this morning.",
    "I'm trying to cut down on screen time.",
    "We're hosting a small dinner for friends soon.",
)
ASSISTANT_CHATTER = (
    "That sounds like quite a week.",
    "Thanks for sharing that with me.",
    "I hope things settle down soon.",
    "That's a nice way to spend the time.",
    "Good luck with it, let me know how it goes.",
    "That must have been frustrating.",
    "It sounds like you've got a lot going on.",
    "I'm happy to help with that whenever you like.",
    "That's a great idea.",
    "Small steps like that add up over time.",
)
# Chatter turns that share a topic with the probes (food, music, work, pets) but state no value.
NEAR_TOPIC_CHATTER = (
    "I'm cooking dinner for friends tomorrow and can't decide what to make.",
    "A coworker asked what music I'd recommend for focusing.",
    "My dog chewed one of my shoes this morning.",
    "My doctor's office sent a reminder about my annual checkup.",
    "I should really update my resume at some point.",
    "We went to a new restaurant but the service was slow.",
    "I painted a small canvas over the weekend.",
    "My partner and I argued about which movie to watch.",
    "I always feel better after a workout.",
    "Meetings ate up my whole afternoon again.",
)


@dataclass(frozen=True)
class ScenarioTurn:
    turn_id: str
    role: str
    text: str
    session: int


@dataclass(frozen=True)
class Scenario:
    """One knowledge-update case.

    ``stale_values`` lists earlier values, oldest first. ``value_turn_ids`` names the original statement
    and each update, in order, so the last one states ``current_value``.
    """

    scenario_id: int
    attribute: str
    turns: tuple[ScenarioTurn, ...]
    probe: str
    current_value: str
    stale_values: tuple[str, ...]
    has_change_marker: bool
    value_turn_ids: tuple[str, ...] = ()


# Words that state outright that a fact changed. Updates without one only state the new value.
CHANGE_MARKERS = ("actually", "now", "anymore", "no longer", "switched", "moved", "changed", "renamed", "quit", "left")
_MARKER_PATTERN = re.compile(r"\b(" + "|".join(re.escape(m) for m in CHANGE_MARKERS) + r")\b", re.IGNORECASE)


def value_pattern(value: str) -> re.Pattern[str]:
    """Case-insensitive pattern that matches ``value`` as whole words ("10 mg" does not match "100 mg")."""
    return re.compile(r"(?<![\w-])" + re.escape(value) + r"(?![\w-])", re.IGNORECASE)


def mentions(text: str, value: str) -> bool:
    return value_pattern(value).search(text) is not None


def _capitalize(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


class _ChatterSource:
    """Draws chatter without repeats inside one scenario, so no turn is a verbatim copy of another."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[str] = set()

    def _draw(self, pool: tuple[str, ...]) -> str:
        fresh = [text for text in pool if text not in self.used] or list(pool)
        text = self.rng.choice(fresh)
        self.used.add(text)
        return text

    def turns(self, count: int, first_role: str) -> list[tuple[str, str]]:
        """Return ``count`` (role, text) turns alternating user and assistant, starting with ``first_role``."""
        turns = []
        role = first_role
        for _ in range(count):
            if role == "user":
                pool = USER_CHATTER if self.rng.random() < 0.8 else NEAR_TOPIC_CHATTER
                turns.append(("user", self._draw(pool)))
                role = "assistant"
            else:
                turns.append(("assistant", self._draw(ASSISTANT_CHATTER)))
                role = "user"
        return turns


def _distractor(rng: random.Random, attribute: Attribute) -> str:
    """Return a statement of some other attribute, so a probe has a plausible wrong match to skip."""
    other = rng.choice([a for a in ATTRIBUTES if a.name != attribute.name])
    return _capitalize(rng.choice(other.statements).format(v=rng.choice(other.values)))


def generate_scenarios(count: int = DEFAULT_COUNT, seed: int = DEFAULT_SEED) -> list[Scenario]:
    """Generate ``count`` scenarios, cycling through the attributes. Same ``count`` and ``seed``, same output."""
    if count < 1:
        raise ValueError(f"count must be a positive number of scenarios, got {count}")
    rng = random.Random(seed)
    scenarios = []
    for scenario_id in range(count):
        attribute = ATTRIBUTES[scenario_id % len(ATTRIBUTES)]
        updates = 2 if rng.random() < 0.25 else 1
        values = rng.sample(attribute.values, updates + 1)
        chatter = _ChatterSource(rng)
        script: list[tuple[str, str, int]] = []  # (role, text, session)

        session = 1
        for role, text in chatter.turns(rng.randint(0, 2), "user"):
            script.append((role, text, session))
        value_turns = [len(script)]
        script.append(("user", _capitalize(rng.choice(attribute.statements).format(v=values[0])), session))

        has_marker = False
        for update_index in range(1, updates + 1):
            between = chatter.turns(rng.randint(3, 10), "assistant")
            split = rng.randint(1, len(between))
            for role, text in between[:split]:
                script.append((role, text, session))
            session += 1
            for role, text in between[split:]:
                script.append((role, text, session))
            if rng.random() < 0.35:
                script.append(("user", _distractor(rng, attribute), session))
            template = rng.choice(attribute.updates)
            text = _capitalize(template.format(v=values[update_index], old=values[update_index - 1]))
            has_marker = has_marker or _MARKER_PATTERN.search(text) is not None
            value_turns.append(len(script))
            script.append(("user", text, session))

        for role, text in chatter.turns(rng.randint(0, 3), "assistant"):
            script.append((role, text, session))

        turns = tuple(
            ScenarioTurn(f"ku{scenario_id}-t{index}", role, text, turn_session)
            for index, (role, text, turn_session) in enumerate(script)
        )
        scenarios.append(
            Scenario(
                scenario_id=scenario_id,
                attribute=attribute.name,
                turns=turns,
                probe=rng.choice(attribute.probes),
                current_value=values[-1],
                stale_values=tuple(values[:-1]),
                has_change_marker=has_marker,
                value_turn_ids=tuple(turns[index].turn_id for index in value_turns),
            )
        )
    return scenarios


def score_retrieved(scenario: Scenario, texts: list[str]) -> tuple[bool, bool]:
    """Score retrieved texts as (current value found, stale value found).

    A text that names both a stale and the current value ("I moved from Denver to Osaka") counts for the
    current value only, because it states the change.
    """
    current = False
    stale = False
    for text in texts:
        if mentions(text, scenario.current_value):
            current = True
        elif any(mentions(text, value) for value in scenario.stale_values):
            stale = True
    return current, stale


TOP_K = 3


def knowledge_update_specs(resources: "Resources", rank: int, key_modes: list[str | None]) -> list["PeerSpec"]:
    """Peers of the knowledge-update workload: sidecars at ``rank``, budgeted and uncapped stores."""
    specs = [resources.sidecar_spec(rank, key_mode) for key_mode in key_modes]
    specs.extend(resources.baseline_specs(rank))
    specs.extend(resources.baseline_specs(None))
    return specs


def _rate(flags: list[bool]) -> float:
    return sum(flags) / len(flags) if flags else float("nan")


def run_knowledge_update(
    resources: "Resources",
    *,
    count: int = DEFAULT_COUNT,
    seed: int = DEFAULT_SEED,
    rank: int = 64,
    key_modes: tuple[str | None, ...] = (None,),
) -> dict:
    """Feed every scenario to a fresh instance of each peer and score its top 3 memories for the probe."""
    from tqdm import tqdm

    from benchmarks.peers import SidecarPeer

    scenarios = generate_scenarios(count, seed)
    texts = [turn.text for scenario in scenarios for turn in scenario.turns]
    texts += [f"<message role='{turn.role}'>{turn.text}</message>" for scenario in scenarios for turn in scenario.turns]
    texts += [scenario.probe for scenario in scenarios]
    resources.encoder.prefill(texts)

    results = []
    for spec in knowledge_update_specs(resources, rank, list(key_modes)):
        current_flags, stale_flags, first_flags = [], [], []
        # Gate outcomes of the statement turns, for sidecar peers only.
        gate_flags: dict[str, list[bool]] = {"original committed": [], "update committed": [],
                                             "update replaced a slot": []}
        by_attribute: dict[str, list[bool]] = {}
        by_marker: dict[str, list[bool]] = {"with marker": [], "without marker": []}
        for scenario in tqdm(scenarios, desc=f"knowledge update {spec.label}", unit="scenario", leave=False):
            peer = spec.build()
            for turn in scenario.turns:
                peer.add(turn.turn_id, turn.text, turn.role)
            hits = peer.search(scenario.probe, TOP_K)
            if isinstance(peer, SidecarPeer):
                decisions = dict(zip(peer.turn_ids, peer.decisions))
                original, update = decisions[scenario.value_turn_ids[0]], decisions[scenario.value_turn_ids[-1]]
                gate_flags["original committed"].append(bool(original.committed))
                gate_flags["update committed"].append(bool(update.committed))
                gate_flags["update replaced a slot"].append(update.replaced_slot is not None)
            if hasattr(peer, "close"):
                peer.close()
            current, stale = score_retrieved(scenario, [hit.text for hit in hits])
            first_current, _ = score_retrieved(scenario, [hit.text for hit in hits[:1]])
            current_flags.append(current)
            stale_flags.append(stale)
            first_flags.append(first_current)
            by_attribute.setdefault(scenario.attribute, []).append(current)
            by_marker["with marker" if scenario.has_change_marker else "without marker"].append(current)
        results.append(
            {
                "family": spec.family,
                "budget": spec.budget,
                "options": spec.options,
                "scenarios": len(scenarios),
                "current_in_top3": _rate(current_flags),
                "stale_in_top3": _rate(stale_flags),
                "current_at_1": _rate(first_flags),
                "current_in_top3_by_attribute": {name: _rate(flags) for name, flags in by_attribute.items()},
                "current_in_top3_by_marker": {name: _rate(flags) for name, flags in by_marker.items()},
                "gate": {name: _rate(flags) for name, flags in gate_flags.items() if flags},
            }
        )
    return {
        "seed": seed,
        "scenarios": len(scenarios),
        "two_updates": sum(1 for scenario in scenarios if len(scenario.stale_values) == 2),
        "with_change_marker": sum(1 for scenario in scenarios if scenario.has_change_marker),
        "turns": sum(len(scenario.turns) for scenario in scenarios),
        "rank": rank,
        "top_k": TOP_K,
        "peers": results,
    }
