"""Classification metrics (scikit-learn): accuracy and macro-F1 over a fixed label set."""

from __future__ import annotations

from sklearn.metrics import accuracy_score, f1_score

INVALID = "<invalid>"


def classification_metrics(predicted: list[str | None], gold: list[str], labels: list[str]) -> dict[str, float]:
    """Accuracy, macro-F1 over ``labels`` and the share of predictions that named no valid label."""
    pred = [p if p is not None else INVALID for p in predicted]
    return {
        "accuracy": float(accuracy_score(gold, pred)),
        "macro_f1": float(f1_score(gold, pred, labels=labels, average="macro", zero_division=0)),
        "invalid_rate": sum(p == INVALID for p in pred) / len(pred) if pred else 0.0,
    }
