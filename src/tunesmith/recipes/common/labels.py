"""What both classify variants share (a task head, and label words from a chat model): class names, one
prediction's JSON shape, and the scoring, baselines and error analysis of label predictions."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from tunesmith.core.config import RunConfig
from tunesmith.data.formats import RowError
from tunesmith.data.records import Labeled, Record
from tunesmith.metrics.classification import classification_details, classification_metrics, probability_metrics
from tunesmith.metrics.error_analysis import error_analysis
from tunesmith.recipes.contract import TaskEnsemble, TrainedRunView


def convert(record: Record, cfg: RunConfig) -> Labeled:
    """The record with its label as the class name (``data.label_names``, ``task.classify.label_separator``)."""
    if not isinstance(record, Labeled):
        raise RowError(f"a {type(record).__name__} record has no class label", "wrong_type")
    return Labeled(record.text, class_name(record.label, cfg), record.text_pair, record.source, dict(record.meta))


def class_name(label: str, cfg: RunConfig) -> str:
    label = cfg.data.label_names.get(label, label)
    separator = cfg.task.classify.label_separator
    return label.split(separator, 1)[0] if separator else label


def prediction(labels: Sequence[str], probs: Sequence[float]) -> dict[str, Any]:
    """One JSON-ready prediction: the most probable class, its probability and every class's probability."""
    best = max(range(len(labels)), key=lambda i: probs[i])
    return {
        "prediction": labels[best],
        "confidence": round(float(probs[best]), 6),
        "probabilities": {label: round(float(p), 6) for label, p in zip(labels, probs, strict=True)},
    }


def scored_labels(predictions: Sequence[dict[str, Any]], records: Sequence[Labeled]) -> list[str]:
    """The label set predictions are scored over: the model's classes, plus any gold label it does not know."""
    known = list(predictions[0].get("probabilities") or {}) if predictions else []
    extra = sorted({r.label for r in records} - set(known))
    return known + extra


def score_records(
    predictions: Sequence[dict[str, Any]], records: Sequence[Labeled], cfg: RunConfig
) -> dict[str, float]:
    labels = scored_labels(predictions, records)
    gold = [r.label for r in records]
    metrics = classification_metrics([p["prediction"] for p in predictions], gold, labels)
    if predictions and all(p.get("probabilities") for p in predictions):
        matrix = [[p["probabilities"].get(label, 0.0) for label in labels] for p in predictions]
        probability = probability_metrics(matrix, gold, labels)
        probability.pop("constrained_accuracy", None)  # predictions already are the most probable class
        metrics |= probability
    return metrics


def row_correct(prediction: dict[str, Any], record: Labeled) -> bool:
    return prediction["prediction"] == record.label


def details(predictions: Sequence[dict[str, Any]], records: Sequence[Labeled], cfg: RunConfig) -> dict[str, Any]:
    """Per-class metrics, confusion matrix, and the error analysis (per class, per input length, most confident)."""
    labels = scored_labels(predictions, records)
    gold = [r.label for r in records]
    predicted = [p["prediction"] for p in predictions]
    out = classification_details(predicted, gold, labels)
    inputs = [f"{r.text}\n\n{r.text_pair}" if r.text_pair else r.text for r in records]
    correct = [p == g for p, g in zip(predicted, gold, strict=True)]
    confidences = [p.get("confidence") for p in predictions]
    out["errors"] = error_analysis(inputs, gold, predicted, correct, confidences)
    return out


def baselines(train: Sequence[Record], records: Sequence[Labeled], cfg: RunConfig) -> dict[str, list[dict]]:
    """Majority class of the training split, with the class frequencies as its probabilities."""
    counts = Counter(r.label for r in train if isinstance(r, Labeled))
    if not counts:
        return {}
    labels = sorted(counts)
    total = sum(counts.values())
    priors = [counts[label] / total for label in labels]
    return {"majority_class": [prediction(labels, priors) for _ in records]}


def stored_probabilities(
    run: TrainedRunView, records: Sequence[Labeled], predictions: Sequence[dict[str, Any]]
) -> list[list[float]]:
    """Each record's class probabilities as the run's evaluation wrote them (over ``run.labels()``)."""
    labels = run.labels() or []
    return [[p["probabilities"][label] for label in labels] for p in predictions]


def ensemble_prediction(labels: list[str], probabilities: list[float], record: Labeled) -> dict[str, Any]:
    return prediction(labels, probabilities)


# Both classify variants (a head's softmax, the label words' likelihoods) give probabilities over the same labels,
# so their runs average into one ensemble, whichever way each member answers.
LABEL_ENSEMBLE = TaskEnsemble(stored_probabilities, ensemble_prediction)
