"""Metrics on hand-computed cases, against scikit-learn directly, and the bootstrap interval's coverage."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from tunesmith.metrics.bias import counterfactual, flip_rate
from tunesmith.metrics.classification import (
    classification_details,
    classification_metrics,
    expected_calibration_error,
    probability_metrics,
)
from tunesmith.metrics.compare import compare, mcnemar_test
from tunesmith.metrics.error_analysis import error_analysis
from tunesmith.metrics.text import exact_match, extract_label, token_f1

LABELS = ["negative", "positive"]


def test_classification_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(1)
    gold = list(rng.choice(["a", "b", "c"], size=60))
    pred = list(rng.choice(["a", "b", "c"], size=60))
    ours = classification_metrics(pred, gold, ["a", "b", "c"])
    assert ours["macro_f1"] == pytest.approx(f1_score(gold, pred, average="macro"))
    assert ours["weighted_f1"] == pytest.approx(f1_score(gold, pred, average="weighted"))
    assert ours["macro_precision"] == pytest.approx(precision_score(gold, pred, average="macro"))
    assert ours["macro_recall"] == pytest.approx(recall_score(gold, pred, average="macro"))
    assert ours["accuracy"] == pytest.approx(np.mean(np.array(gold) == np.array(pred)))


def test_invalid_answers_count_as_wrong_and_are_reported() -> None:
    gold = ["positive", "negative", "positive", "negative"]
    pred = ["positive", None, "positive", "positive"]
    metrics = classification_metrics(pred, gold, LABELS)
    assert metrics["accuracy"] == 0.5
    assert metrics["invalid_rate"] == 0.25
    details = classification_details(pred, gold, LABELS)
    # rows gold negative / positive; columns negative, positive, <invalid>
    assert details["confusion_matrix"]["matrix"] == [[0, 1, 1], [0, 2, 0]]
    assert details["per_class"]["positive"] == {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2}


@pytest.mark.parametrize(
    ("answer", "label"),
    [
        ("positive", "positive"),
        ("Negative.", "negative"),
        ("The sentiment of this review is positive.", "positive"),
        ("positive or negative, hard to say", "positive"),  # starts with a label
        ("it is either negative or positive", None),  # mentions both: no answer
        ("The sentiment of this", None),
    ],
)
def test_extract_label(answer: str, label: str | None) -> None:
    assert extract_label(answer, LABELS) == label


def test_squad_style_text_metrics() -> None:
    assert exact_match("The Eiffel Tower!", "eiffel tower") == 1.0
    assert token_f1("in the city of Paris", "Paris city") == pytest.approx(2 * (2 / 4) * 1.0 / (2 / 4 + 1.0))
    assert token_f1("", "") == 1.0


def test_mcnemar_exact_on_a_hand_case() -> None:
    refs = ["x"] * 12
    # base right only on row 0; tuned right only on rows 1-9; rows 10-11 both right
    base = ["x", *["y"] * 9, "x", "x"]
    tuned = ["y", *["x"] * 9, "x", "x"]
    p = mcnemar_test(base, tuned, refs, lambda pred, ref: pred == ref)
    assert p == pytest.approx(0.021484375)  # two-sided binomial, 1 of 10 discordant pairs


def _accuracy(preds, refs) -> dict[str, float]:
    return {"accuracy": float(np.mean(np.asarray(preds) == np.asarray(refs)))}


def test_bootstrap_interval_covers_the_true_delta_at_about_95_percent() -> None:
    rng = np.random.default_rng(0)
    true_delta, covered, sims, n = 0.15, 0, 100, 100
    for sim in range(sims):
        refs = ["x"] * n
        base = ["x" if r else "y" for r in rng.random(n) < 0.6]
        tuned = ["x" if r else "y" for r in rng.random(n) < 0.6 + true_delta]
        stats = compare(_accuracy, base, tuned, refs, n_resamples=150, seed=sim)["accuracy"]
        low, high = stats["ci95"]
        covered += low <= true_delta <= high
    assert 0.88 <= covered / sims <= 0.995


def test_compare_reports_delta_interval_and_test() -> None:
    refs = ["positive", "negative"] * 50
    base = ["negative"] * 100
    tuned = list(refs)
    stats = compare(
        lambda p, r: classification_metrics([extract_label(x, LABELS) for x in p], r, LABELS),
        base,
        tuned,
        refs,
        correct=lambda p, r: p == r,
        n_resamples=200,
    )
    assert stats["accuracy"]["delta"] == pytest.approx(0.5)
    assert stats["accuracy"]["test"] == "mcnemar" and stats["accuracy"]["p_value"] < 1e-10
    assert stats["macro_f1"]["test"] == "paired_bootstrap"
    low, high = stats["accuracy"]["ci95"]
    assert 0.35 < low < 0.5 < high < 0.65


@pytest.mark.parametrize(
    ("text", "swapped"),
    [
        ("He said his wife loved it.", "She said her husband loved it."),
        ("the actress and her brother", "the actor and his sister"),
        ("JOHN is great", "MARY is great"),
        ("a film about the weather", None),
        ("theme and hero", None),  # whole words only
    ],
)
def test_counterfactual_swaps_identity_terms_keeping_case(text: str, swapped: str | None) -> None:
    assert counterfactual(text) == swapped


def test_flip_rate_counts_changed_answers() -> None:
    assert flip_rate(["positive", "negative", None, "positive"], ["positive", "positive", None, "negative"]) == 0.5
    assert flip_rate([], []) == 0.0


def test_error_analysis_by_class_length_and_confidence() -> None:
    inputs = ["short one", "a " * 15, "b " * 30, "c " * 50]
    refs = ["positive", "negative", "negative", "positive"]
    preds = ["positive", "positive", "negative", "negative"]
    correct = [p == r for p, r in zip(preds, refs, strict=True)]
    result = error_analysis(inputs, refs, preds, correct, [0.9, 0.6, 0.8, 0.95])
    assert result["per_class"]["negative"] == {"rows": 2, "errors": 1, "error_rate": 0.5}
    assert [b["words"] for b in result["per_length"]] == ["0-10", "11-20", "21-40", "41+"]
    assert [b["errors"] for b in result["per_length"]] == [0, 1, 0, 1]
    assert [e["confidence"] for e in result["most_confident_errors"]] == [0.95, 0.6]


def test_probability_metrics_match_sklearn_and_a_hand_computed_ece() -> None:
    gold = ["positive", "negative", "positive", "negative"]
    probs = [[0.2, 0.8], [0.9, 0.1], [0.6, 0.4], [0.3, 0.7]]  # columns: negative, positive
    metrics = probability_metrics(probs, gold, LABELS)
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score([1, 0, 1, 0], [0.8, 0.1, 0.4, 0.7]))
    assert metrics["constrained_accuracy"] == 0.5
    # bins: 0.8 right, 0.9 right, 0.6 wrong, 0.7 wrong -> |1-0.8|+|1-0.9|+|0-0.6|+|0-0.7| over 4 rows
    assert metrics["ece"] == pytest.approx((0.2 + 0.1 + 0.6 + 0.7) / 4)
    assert expected_calibration_error(np.array([0.95, 0.95]), np.array([True, True])) == pytest.approx(0.05)


def test_compare_survives_resamples_where_a_metric_is_undefined() -> None:
    from tunesmith.recipes import sft

    refs = ["positive", "negative", "positive"]
    base = [sft.Reply("negative", 0.5, [0.5, 0.5])] * 3
    tuned = [sft.Reply(r, 0.9, [0.1, 0.9] if r == "positive" else [0.9, 0.1]) for r in refs]
    stats = compare(lambda p, r: sft.score(p, r, LABELS), base, tuned, refs, n_resamples=200)
    assert stats["roc_auc"]["delta"] == pytest.approx(0.5)  # ROC-AUC is undefined on one-class resamples
    assert stats["accuracy"]["delta"] == pytest.approx(2 / 3)
