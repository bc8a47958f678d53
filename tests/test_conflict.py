"""Fact extraction and arousal cues, without the model."""

from __future__ import annotations

import pytest

from sidecar_memory import SidecarConfig
from sidecar_memory.affect import arousal, extreme_numbers
from sidecar_memory.conflict import conflicting_slots, extract_facts

STATEMENTS = [
    ("My favorite color is blue.", "favorite color", "blue"),
    ("Actually my favorite color is green now!", "favorite color", "green"),
    ("Not coffee anymore, tea now.", "drink", "tea"),
    ("I switched from coffee to hot chocolate.", "drink", "hot chocolate"),
    ("I'm vegetarian.", "diet", "vegetarian"),
    ("I started eating fish, I'm pescatarian now.", "diet", "pescatarian"),
    ("We moved to Denver last month.", "home", "denver"),
    ("I moved from Lisbon to Osaka.", "home", "osaka"),
    ("I left Acme Robotics and joined Bluefin Labs.", "employer", "bluefin labs"),
    ("My dog's name is Rex.", "pet name", "rex"),
    ("My partner is Elena now.", "partner name", "elena"),
    ("Gym is on Friday from now on.", "gym day", "friday"),
    ("The team meeting moved from 9:30 am to 4:45 pm.", "meeting time", "4:45 pm"),
    ("My doctor increased my dose to 40 mg.", "dose", "40 mg"),
    ("I'm really into jazz these days.", "music", "jazz"),
]


@pytest.mark.parametrize("text, attribute, value", STATEMENTS)
def test_extract_fact(text, attribute, value):
    facts = {f.attribute: f.value for f in extract_facts(text, "user")}
    assert facts.get(attribute) == value


@pytest.mark.parametrize("text", [
    "What is my favorite color?",
    "My kids are so excited about the trip.",
    "I went to a pottery class with my kids.",
    "That sounds great, thanks!",
])
def test_no_fact_extracted(text):
    assert extract_facts(text, "user") == []


def test_speaker_prefix_keys_facts():
    anna = extract_facts("Anna: My favorite color is blue.", "user")
    ben = extract_facts("Ben: My favorite color is red.", "user")
    assert anna[0].speaker == "anna"
    assert ben[0].speaker == "ben"
    assert conflicting_slots(ben, {0: [f.as_pair() for f in anna]}) == {}


def test_conflicting_slots_finds_stale_value():
    old = extract_facts("I live in Boston.", "user")
    new = extract_facts("We moved to Denver.", "user")
    stale = conflicting_slots(new, {3: [f.as_pair() for f in old], 5: [["user|drink", "tea"]]})
    assert list(stale) == [3]


def test_same_value_is_no_conflict():
    old = extract_facts("My favorite color is blue.", "user")
    again = extract_facts("Blue is still my favorite color, I love it.", "user")
    assert conflicting_slots(again, {0: [f.as_pair() for f in old]}) == {}


@pytest.mark.parametrize("text, expected", [
    ("It will be 120°F in Death Valley", ["120°F"]),
    ("We drove at 95 mph on the highway", ["95 mph"]),
    ("The ticket cost $25,000!", ["$25,000"]),
    ("It was 21°C and sunny", []),
    ("I walked 3 km to work", []),
])
def test_extreme_numbers(text, expected):
    assert extreme_numbers(text) == expected


def test_arousal_orders_hazard_above_mundane():
    config = SidecarConfig()
    hazard = arousal("DANGER! There is a gas leak, it is very dangerous!", config)
    mundane = arousal("I had toast for breakfast.", config)
    assert hazard.score > 0.5
    assert mundane.score == 0.0
    assert "gas leak" in hazard.cues


def test_custom_hazard_lexicon():
    config = SidecarConfig(hazard_words=("quicksand",))
    assert arousal("We stepped into quicksand", config).score > 0
    assert arousal("There is a fire", config).score == 0
