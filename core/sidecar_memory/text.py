"""Word-level text helpers shared by the key encoder, the gate and conflict detection."""

from __future__ import annotations

import hashlib
import re

STOPWORDS = frozenset(
    """a about above after again against all am an and any are aren't as at be because been before
    being below between both but by can can't cannot could couldn't did didn't do does doesn't doing
    don't down during each few for from further had hadn't has hasn't have haven't having he he'd he'll
    he's her here here's hers herself him himself his how how's i i'd i'll i'm i've if in into is isn't
    it it's its itself let's me more most mustn't my myself no nor not of off on once only or other
    ought our ours ourselves out over own same shan't she she'd she'll she's should shouldn't so some
    such than that that's the their theirs them themselves then there there's these they they'd they'll
    they're they've this those through to too under until up very was wasn't we we'd we'll we're we've
    were weren't what what's when when's where where's which while who who's whom why why's with won't
    would wouldn't you you'd you'll you're you've your yours yourself yourselves yeah yes oh hey hi
    hello okay ok just really also got get gets getting like well now lot lots thing things much
    will one way know think thanks thank sure great good wow so much sounds sound awesome cool""".split()
)

_WORD_RE = re.compile(r"[0-9]+(?:[.,][0-9]+)*|[^\W\d_]+(?:['’][^\W\d_]+)*", re.UNICODE)


def words(text: str) -> list[str]:
    """Split text into lowercase words and numbers, dropping punctuation and emoji."""
    return [w.replace("’", "'") for w in _WORD_RE.findall(text.lower())]


def stem(word: str) -> str:
    """Strip common English inflections so 'hiking' and 'hikes' share a feature.

    The rule set is deliberately small, because it only has to make related
    forms collide in a hashed feature space, not produce dictionary words.
    """
    if len(word) <= 3 or word.isdigit():
        return word
    for suffix in ("'s", "ing", "edly", "ed", "ies", "es", "s", "ly"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)] + ("y" if suffix == "ies" else "")
            break
    # A final silent e goes too, so "hike" meets "hiking" at "hik".
    return word[:-1] if word.endswith("e") and len(word) >= 4 else word


def content_terms(text: str) -> list[str]:
    """Return the stemmed non-stopword terms of a text, in order, with repeats."""
    return [stem(w) for w in words(text) if w not in STOPWORDS and len(w) > 1]


def stable_hash(term: str) -> int:
    """Hash a term to a 64-bit integer that is the same in every process.

    Python's ``hash`` is salted per process, so saved hashed features would
    not line up after a reload. blake2b is not salted.
    """
    return int.from_bytes(hashlib.blake2b(term.encode("utf-8"), digest_size=8).digest(), "little")
