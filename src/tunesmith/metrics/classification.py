"""Classification metrics (scikit-learn) over a fixed label set; a prediction outside it counts as wrong."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

INVALID = "<invalid>"


def classification_metrics(predicted: Sequence[str | None], gold: Sequence[str], labels: list[str]) -> dict[str, float]:
    """Accuracy; macro and micro precision, recall and F1; weighted F1; share of predictions naming no valid label.

    Micro averages count over the label set, so an invalid answer lowers recall but is no false positive.
    """
    pred = [p if p is not None else INVALID for p in predicted]
    precision, recall, f1, support = precision_recall_fscore_support(
        gold, pred, labels=labels, average=None, zero_division=0
    )
    micro = precision_recall_fscore_support(gold, pred, labels=labels, average="micro", zero_division=0)
    total = support.sum()
    return {
        "accuracy": float(np.mean([p == g for p, g in zip(pred, gold, strict=True)])) if pred else 0.0,
        "macro_f1": float(f1.mean()),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "weighted_f1": float((f1 * support).sum() / total) if total else 0.0,
        "micro_precision": float(micro[0]),
        "micro_recall": float(micro[1]),
        "micro_f1": float(micro[2]),
        "invalid_rate": sum(p == INVALID for p in pred) / len(pred) if pred else 0.0,
    }


def classification_details(predicted: Sequence[str | None], gold: Sequence[str], labels: list[str]) -> dict:
    """Per-class precision / recall / F1 / support and the confusion matrix (rows: gold, columns: predicted)."""
    pred = [p if p is not None else INVALID for p in predicted]
    precision, recall, f1, support = precision_recall_fscore_support(
        gold, pred, labels=labels, average=None, zero_division=0
    )
    columns = [*labels, INVALID]
    matrix = confusion_matrix(gold, pred, labels=columns)
    return {
        "per_class": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
        },
        "confusion_matrix": {"labels": columns, "matrix": matrix[: len(labels)].tolist()},
    }


def probability_metrics(probs: Sequence[Sequence[float]], gold: Sequence[str], labels: list[str]) -> dict[str, float]:
    """Metrics of label probabilities: constrained accuracy (argmax over labels), ECE, and ROC-AUC when binary."""
    matrix = np.asarray(probs, dtype=float)
    gold_index = np.array([labels.index(g) if g in labels else -1 for g in gold])
    predicted = matrix.argmax(axis=1)
    metrics = {
        "constrained_accuracy": float(np.mean(predicted == gold_index)),
        "ece": expected_calibration_error(matrix.max(axis=1), predicted == gold_index),
    }
    if len(labels) == 2 and len(set(gold_index.tolist()) & {0, 1}) == 2:
        metrics["roc_auc"] = float(roc_auc_score(gold_index == 1, matrix[:, 1]))
    return metrics


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size.

    Hand-written: ten lines, and the libraries that have it (torchmetrics, netcal) would be a dependency each.
    """
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(total)
