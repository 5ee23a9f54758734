"""A small synthetic sentiment data set that needs word order to solve (negation, "but"), made on the spot.

Each review is one to three clauses such as "the battery was not really good". A clause's polarity is its
adjective's, flipped by a negator; "X but Y" takes Y's polarity, other reviews their clauses' majority. A
bag-of-words model cannot read "not" correctly, so the depth of the model matters.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

POSITIVE = ["good", "great", "excellent", "wonderful", "superb", "fantastic", "lovely", "brilliant", "pleasant",
            "solid", "reliable", "delightful", "impressive", "sturdy", "comfortable", "perfect"]
NEGATIVE = ["bad", "terrible", "awful", "poor", "horrible", "dreadful", "disappointing", "flimsy", "useless",
            "mediocre", "cheap", "annoying", "unreliable", "noisy", "uncomfortable", "broken"]
NOUNS = ["battery", "screen", "delivery", "price", "book", "film", "service", "sound", "design", "keyboard",
         "camera", "story", "packaging", "fabric", "app", "manual", "charger", "plot", "seller", "blender"]
VERBS = ["is", "was", "felt", "seems", "looked", "turned out"]
INTENSIFIERS = ["", "", "really", "very", "quite", "so", "rather", "truly"]
NEGATORS = ["not", "never", "hardly"]
OPENERS = ["", "", "", "honestly", "overall", "i think", "to be fair", "well"]
LABEL_NAMES = ["negative", "positive"]


# Shares of the compositional cases: low enough that word counts alone already get a model well above chance
# (so tiny models learn within a few hundred steps), high enough that reading word order still pays.
NEGATION_P = 0.2
SHAPES = (("single", 0.4), ("but", 0.2), ("and", 0.2), ("three", 0.2))


def _clause(rng: random.Random, polarity: int | None = None) -> tuple[str, int]:
    negated = rng.random() < NEGATION_P
    if polarity is None:
        polarity = rng.choice((-1, 1))
    adjective_polarity = -polarity if negated else polarity
    adjective = rng.choice(POSITIVE if adjective_polarity > 0 else NEGATIVE)
    words = ["the", rng.choice(NOUNS), rng.choice(VERBS), rng.choice(NEGATORS) if negated else "",
             rng.choice(INTENSIFIERS), adjective]
    return " ".join(w for w in words if w), polarity


def review(rng: random.Random) -> tuple[str, int]:
    """One review and its true label (1 positive, 0 negative)."""
    opener = rng.choice(OPENERS)
    shape = rng.choices([name for name, _ in SHAPES], weights=[w for _, w in SHAPES])[0]
    if shape == "single":
        text, polarity = _clause(rng)
    elif shape == "but":  # "X but Y": the second clause decides, and contrasts with the first
        second, polarity = _clause(rng)
        first, _ = _clause(rng, -polarity)
        text = f"{first} but {second}"
    elif shape == "and":  # two clauses joined by "and" agree
        first, polarity = _clause(rng)
        second, _ = _clause(rng, polarity)
        text = f"{first} and {second}"
    else:  # three clauses: the majority decides
        parts = [_clause(rng) for _ in range(3)]
        polarity = 1 if sum(p for _, p in parts) > 0 else -1
        text = f"{parts[0][0]}, {parts[1][0]} and {parts[2][0]}"
    text = f"{opener} {text}" if opener else text
    return text, int(polarity > 0)


def reviews(n: int, seed: int) -> Iterator[tuple[str, int]]:
    rng = random.Random(seed)
    for _ in range(n):
        yield review(rng)
