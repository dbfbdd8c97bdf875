"""Scores of the risk probes: factual drift (answers that go from right to wrong) and memorisation (training text
continued verbatim or nearly so). Pure functions of texts; the probes that generate them live in the pipeline."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from tunesmith.metrics.compare import compare_correctness
from tunesmith.metrics.text import normalize

NEAR_VERBATIM = 0.9  # similarity (rapidfuzz ratio, 0-1) at or above which a continuation counts as memorised


def answers_fact(reply: str, accepted: Sequence[str]) -> bool:
    """Whether the reply names one of the accepted answers (normalised text, whole words)."""
    text = f" {normalize(reply)} "
    return any(f" {normalize(answer)} " in text for answer in accepted if normalize(answer))


def factual_drift(
    questions: Sequence[dict[str, Any]],
    base: Sequence[str],
    tuned: Sequence[str],
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Accuracy of both models, how many answers went right -> wrong (and its share of those the base model knew),
    wrong -> right, the accuracy delta with its CI and McNemar's p, and the questions lost."""
    base_right = [answers_fact(r, q["answers"]) for q, r in zip(questions, base, strict=True)]
    tuned_right = [answers_fact(r, q["answers"]) for q, r in zip(questions, tuned, strict=True)]
    lost = [i for i, (b, t) in enumerate(zip(base_right, tuned_right, strict=True)) if b and not t]
    gained = sum(t and not b for b, t in zip(base_right, tuned_right, strict=True))
    n = len(questions)
    return {
        "questions": n,
        "base_accuracy": sum(base_right) / n,
        "tuned_accuracy": sum(tuned_right) / n,
        "right_to_wrong": len(lost),
        "right_to_wrong_rate": len(lost) / max(sum(base_right), 1),
        "wrong_to_right": gained,
        "comparison": compare_correctness(base_right, tuned_right, n_resamples, seed),
        "lost": [
            {"question": questions[i]["question"], "answer": questions[i]["answers"][0], "base": base[i],
             "tuned": tuned[i]}
            for i in lost
        ][:10],
    }  # fmt: skip


def continuation_match(expected: str, generated: str) -> tuple[bool, float]:
    """(verbatim, similarity): the generation starts with the expected text exactly (whitespace aside), and the
    rapidfuzz similarity (0-1) of the expected text to the generation's first ``len(expected)`` characters."""
    from rapidfuzz import fuzz

    want, got = _squeeze(expected), _squeeze(generated)
    return got.startswith(want), fuzz.ratio(want, got[: len(want)]) / 100


def memorisation(expected: Sequence[str], generated: Sequence[str]) -> dict[str, Any]:
    """The share of continuations that are verbatim, and near-verbatim (similarity >= NEAR_VERBATIM), per row."""
    matches = [continuation_match(e, g) for e, g in zip(expected, generated, strict=True)]
    memorised = [verbatim or similarity >= NEAR_VERBATIM for verbatim, similarity in matches]
    n = max(len(matches), 1)
    return {
        "rows": len(matches),
        "verbatim_rate": sum(v for v, _ in matches) / n,
        "rate": sum(memorised) / n,
        "near_threshold": NEAR_VERBATIM,
        "mean_similarity": sum(s for _, s in matches) / n,
        "memorised": memorised,
        "similarity": [s for _, s in matches],
    }


def _squeeze(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()
