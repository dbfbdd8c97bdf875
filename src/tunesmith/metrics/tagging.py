"""Tagging metrics: entity-level precision / recall / F1 (seqeval, CoNLL-eval rules) and token accuracy.

Entities are found by seqeval's own code: ``get_entities`` in its conlleval-compatible default mode (a chunk starts
at ``B-``/``S-``, or at an ``I-`` that follows another type), or, when the tag scheme is known (``scheme``: BIO,
BIOES or IOB1), its strict mode (``seqeval.scheme.Entities`` with that scheme's class), where a chunk counts only
if it is well formed in the scheme. The counts are then summed here rather than calling ``seqeval.metrics`` for
every score: the bootstrap rescores the test rows a thousand times, and caching each sentence's entities makes
that fast. The values equal ``seqeval.metrics.classification_report`` in the same mode (tested).
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from operator import eq

ENTITY_PREFIXES = ("B-", "I-", "E-", "S-")


def is_entity_scheme(tags: set[str] | Sequence[str]) -> bool:
    """Whether the tags are BIO/IOBES chunk tags (``O`` and ``B-TYPE``...), so entity-level metrics apply."""
    return any(t != "O" for t in tags) and all(t == "O" or t[:2] in ENTITY_PREFIXES for t in tags)


@lru_cache(maxsize=200_000)
def entities(tags: tuple[str, ...], scheme: str | None = None) -> frozenset[tuple[str, int, int]]:
    """The ``(type, first, last)`` chunks of one sentence's tags (seqeval's rules; strict when ``scheme`` is set)."""
    if scheme is not None:
        from seqeval.scheme import IOB1, IOB2, IOBES, Entities

        token_class = {"BIO": IOB2, "IOB2": IOB2, "BIOES": IOBES, "IOBES": IOBES, "IOB1": IOB1}[scheme]
        found = Entities([list(tags)], token_class).entities[0]
        return frozenset((e.tag, e.start, e.end - 1) for e in found)
    from seqeval.metrics.sequence_labeling import get_entities

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seqeval warns about tags outside the scheme; they are simply no chunk
        return frozenset(get_entities(list(tags)))


def _prf(correct: int, predicted: int, gold: int) -> dict[str, float]:
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def entity_counts(
    predicted: Sequence[Sequence[str]], gold: Sequence[Sequence[str]], scheme: str | None = None
) -> dict[str, Counter]:
    """Per entity type: correct, predicted and gold chunk counts over all sentences."""
    found: dict[str, list[str]] = {"correct": [], "predicted": [], "gold": []}
    for pred, ref in zip(predicted, gold, strict=True):
        p, g = entities(tuple(pred), scheme), entities(tuple(ref), scheme)
        found["predicted"] += [t for t, _, _ in p]
        found["gold"] += [t for t, _, _ in g]
        found["correct"] += [t for t, _, _ in p & g]
    return {key: Counter(types) for key, types in found.items()}


def per_type(
    predicted: Sequence[Sequence[str]], gold: Sequence[Sequence[str]], scheme: str | None = None
) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support (gold chunks) of every entity type that is predicted or gold."""
    return _per_type(entity_counts(predicted, gold, scheme))


def _per_type(counts: dict[str, Counter]) -> dict[str, dict[str, float]]:
    types = sorted(set(counts["predicted"]) | set(counts["gold"]))
    return {
        t: {**_prf(counts["correct"][t], counts["predicted"][t], counts["gold"][t]), "support": counts["gold"][t]}
        for t in types
    }


def token_accuracy(predicted: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]) -> float:
    total = sum(len(ref) for ref in gold)
    right = sum(len(ref) if pred == ref else sum(map(eq, pred, ref)) for pred, ref in zip(predicted, gold, strict=True))
    return right / total if total else 0.0


def tagging_metrics(
    predicted: Sequence[Sequence[str]], gold: Sequence[Sequence[str]], scheme: str | None = None
) -> dict[str, float]:
    """Entity-level micro and macro precision / recall / F1 (chunk tags) and token accuracy.

    Macro averages run over the types that occur in the predictions or the references, as seqeval's do. Tags that
    are no chunk scheme (e.g. POS tags) get token accuracy and the per-tag macro F1 instead. ``scheme`` (BIO,
    BIOES, IOB1) scores in seqeval's strict mode for that scheme; None in its default (conlleval) mode.
    """
    for pred, ref in zip(predicted, gold, strict=True):
        if len(pred) != len(ref):
            raise ValueError(f"a prediction has {len(pred)} tags for {len(ref)} tokens")
    accuracy = token_accuracy(predicted, gold)
    if not is_entity_scheme({t for ref in gold for t in ref}):
        return {"token_accuracy": accuracy, "macro_f1": _tag_macro_f1(predicted, gold)}
    counts = entity_counts(predicted, gold, scheme)
    micro = _prf(sum(counts["correct"].values()), sum(counts["predicted"].values()), sum(counts["gold"].values()))
    types = _per_type(counts)
    n = max(len(types), 1)
    return {
        "precision": micro["precision"],
        "recall": micro["recall"],
        "f1": micro["f1"],
        "macro_precision": sum(t["precision"] for t in types.values()) / n,
        "macro_recall": sum(t["recall"] for t in types.values()) / n,
        "macro_f1": sum(t["f1"] for t in types.values()) / n,
        "token_accuracy": accuracy,
    }


def _tag_macro_f1(predicted: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]) -> float:
    from sklearn.metrics import f1_score

    flat_gold = [t for ref in gold for t in ref]
    flat_pred = [t for pred in predicted for t in pred]
    return float(f1_score(flat_gold, flat_pred, labels=sorted(set(flat_gold)), average="macro", zero_division=0))
