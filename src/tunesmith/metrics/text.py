"""Metrics on generated text: exact match, SQuAD-style token F1, and label extraction for classification."""

from __future__ import annotations

import re
import string
from collections import Counter
from functools import lru_cache

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


# Cached: the paired bootstrap scores the same rows again in every resample.
@lru_cache(maxsize=200_000)
def normalize(text: str) -> str:
    """Lower-case, drop punctuation and articles, squeeze whitespace (SQuAD normalisation)."""
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize(prediction) == normalize(reference))


@lru_cache(maxsize=200_000)
def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize(prediction).split(), normalize(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    overlap = sum((Counter(pred) & Counter(ref)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


def extract_label(prediction: str, labels: list[str]) -> str | None:
    """The label a generated answer gives: the label it starts with, else the only label it mentions.

    An answer that mentions no label, or several, is None (counted as wrong, reported as invalid).
    """
    words = normalize(prediction).split()
    by_norm = {normalize(label): label for label in labels}
    for norm, label in sorted(by_norm.items(), key=lambda kv: -len(kv[0])):
        if norm and words[: len(norm.split())] == norm.split():
            return label
    text = f" {' '.join(words)} "
    mentioned = [label for norm, label in by_norm.items() if norm and f" {norm} " in text]
    return mentioned[0] if len(mentioned) == 1 else None
