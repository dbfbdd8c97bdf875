"""Error analysis: where the model is wrong (per class, per input length) and its most confident mistakes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

LENGTH_BUCKETS = ((0, 10), (11, 20), (21, 40), (41, None))  # input length in words


def error_analysis(
    inputs: Sequence[str],
    references: Sequence[str],
    predictions: Sequence[str],
    correct: Sequence[bool],
    confidences: Sequence[float | None],
    top: int = 10,
) -> dict[str, Any]:
    """Error rates per reference class and per input-length bucket, and the ``top`` most confident errors."""
    per_class: dict[str, dict[str, float]] = {}
    for ref, ok in zip(references, correct, strict=True):
        entry = per_class.setdefault(ref, {"rows": 0, "errors": 0})
        entry["rows"] += 1
        entry["errors"] += not ok
    per_length = []
    for low, high in LENGTH_BUCKETS:
        rows = [ok for text, ok in zip(inputs, correct, strict=True) if low <= len(text.split()) <= (high or 10**9)]
        if rows:
            label = f"{low}-{high}" if high else f"{low}+"
            per_length.append({"words": label, "rows": len(rows), "errors": sum(not ok for ok in rows)})
    wrong = [i for i, ok in enumerate(correct) if not ok]
    wrong.sort(key=lambda i: -(confidences[i] or 0.0))
    examples = [
        {"input": inputs[i], "reference": references[i], "prediction": predictions[i], "confidence": confidences[i]}
        for i in wrong[:top]
    ]
    for entry in per_class.values():
        entry["error_rate"] = entry["errors"] / entry["rows"]
    for bucket in per_length:
        bucket["error_rate"] = bucket["errors"] / bucket["rows"]
    return {"per_class": per_class, "per_length": per_length, "most_confident_errors": examples}
