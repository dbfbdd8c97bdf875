"""Synthetic data files: tagged sentences (CoNLL), SQuAD-layout questions, preference pairs."""

from __future__ import annotations

import json
import random
from pathlib import Path

from tests.helpers.paths import SST2

PERSONS = ["Maria Lopez", "John Smith", "Aisha Khan", "Wei Chen", "Olga Petrova", "Carlos Diaz", "Emma Brown"]
PLACES = ["Paris", "Berlin", "Tokyo", "Lagos", "Lima", "Oslo", "Cairo", "Toronto", "Mumbai"]
TEMPLATES = [
    "{P} flew to {L} last week .",
    "we met {P} in {L} yesterday",
    "{P} says {L} is lovely in spring",
    "did you see {P} at the game ?",
    "the weather in {L} was awful",
    "nothing much happened here today",
    "my friend {P} moved from {L} to {L2}",
]
NAMES = ["Maria", "John", "Aisha", "Wei", "Olga", "Carlos", "Emma", "Ravi", "Yuki", "Omar", "Lena", "Pedro"]
THINGS = ["bicycle", "violin", "house", "painting", "boat", "camera", "guitar", "tractor"]
FILLERS = [
    "The market was busy that morning.",
    "It had rained for most of the week.",
    "Prices in the town had gone up again.",
    "Everyone was talking about the festival.",
    "The old bridge was closed for repairs.",
]


def synthetic_sentence(rng: random.Random) -> tuple[list[str], list[str]]:
    """A short sentence with person and location entities in BIO tags (names from fixed lists)."""
    tokens, tags = [], []
    places = rng.sample(PLACES, 2)
    for word in rng.choice(TEMPLATES).split():
        if word == "{P}":
            for i, part in enumerate(rng.choice(PERSONS).split()):
                tokens.append(part)
                tags.append(("B-" if i == 0 else "I-") + "person")
        elif word in ("{L}", "{L2}"):
            tokens.append(places[word == "{L2}"])
            tags.append("B-location")
        else:
            tokens.append(word)
            tags.append("O")
    return tokens, tags


def write_conll(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    blocks = []
    for _ in range(n):
        tokens, tags = synthetic_sentence(rng)
        blocks.append("\n".join(f"{t}\t{g}" for t, g in zip(tokens, tags, strict=True)))
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return path


def synthetic_squad(n: int, seed: int) -> dict:
    """SQuAD-layout paragraphs where the answer to "Who bought ...?" is the one name in the context."""
    rng = random.Random(seed)
    paragraphs = []
    for i in range(n):
        name, thing = rng.choice(NAMES), rng.choice(THINGS)
        before, after = rng.sample(FILLERS, 2)
        event = f"{name} bought a {thing} from a neighbour."
        context = f"{before} {event} {after}" if rng.random() < 0.5 else f"{before} {after} {event}"
        qas = [
            {
                "id": f"q{seed}-{i}",
                "question": f"Who bought a {thing}?",
                "answers": [{"text": name, "answer_start": context.index(name)}],
            }
        ]
        paragraphs.append({"context": context, "qas": qas})
    return {"version": "1.1", "data": [{"title": "synthetic", "paragraphs": paragraphs}]}


def _reviews(n: int) -> list[str]:
    lines = (SST2 / "train.tsv").read_text(encoding="utf-8").splitlines()[1 : n + 1]
    return [line.split("\t")[0] for line in lines]


def write_pairs(path: Path, n: int = 48) -> Path:
    """A learnable preference: the reply 'positive' is always preferred to 'negative'."""
    rows = [{"prompt": f"Sentiment of: {text}", "chosen": "positive", "rejected": "negative"} for text in _reviews(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
