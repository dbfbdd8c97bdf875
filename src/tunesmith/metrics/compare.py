"""Is the tuned model better than the base model, by how much, and how sure are we?

Every metric delta gets a 95% paired-bootstrap confidence interval (both models resampled on the same rows).
The p-value is McNemar's exact test on per-row correctness for classification, and the paired bootstrap's
for other metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import binomtest

ScoreFn = Callable[[Sequence[str], Sequence[str]], dict[str, float]]


def compare(
    score: ScoreFn,
    base: Sequence[str],
    tuned: Sequence[str],
    references: Sequence[str],
    correct: Callable[[str, str], bool] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, object]]:
    """For each metric that ``score`` returns: the delta (tuned - base), its 95% CI and a p-value.

    ``correct(prediction, reference)`` marks a row right or wrong; when given, McNemar's test is used for
    the p-value of accuracy-like metrics (classification), otherwise the paired bootstrap.
    """
    n = len(references)
    base_scores, tuned_scores = score(base, references), score(tuned, references)
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {metric: [] for metric in tuned_scores}
    for _ in range(n_resamples):
        idx = rng.integers(0, n, size=n)
        refs = [references[i] for i in idx]
        b, t = score([base[i] for i in idx], refs), score([tuned[i] for i in idx], refs)
        for metric in samples:
            if metric in t and metric in b:  # e.g. ROC-AUC is undefined on a resample with one class
                samples[metric].append(t[metric] - b[metric])

    mcnemar = mcnemar_test(base, tuned, references, correct) if correct else None
    result: dict[str, dict[str, object]] = {}
    for metric, deltas in samples.items():
        if metric not in base_scores or not deltas:
            continue
        values = np.asarray(deltas)
        delta = tuned_scores[metric] - base_scores[metric]
        if mcnemar is not None and metric == "accuracy":
            test, p_value = "mcnemar", mcnemar
        else:
            # Two-sided paired bootstrap: how often the resampled delta falls on the other side of zero,
            # with the +1 correction so a finite number of resamples never claims p = 0.
            tail = min(np.sum(values <= 0), np.sum(values >= 0))
            test, p_value = "paired_bootstrap", min(1.0, 2 * (tail + 1) / (len(values) + 1))
        result[metric] = {
            "delta": delta,
            "ci95": [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))],
            "test": test,
            "p_value": float(p_value),
        }
    return result


def mcnemar_test(
    base: Sequence[str], tuned: Sequence[str], references: Sequence[str], correct: Callable[[str, str], bool]
) -> float:
    """Exact McNemar p-value: only rows where exactly one model is right carry information."""
    base_only = tuned_only = 0
    for b, t, r in zip(base, tuned, references, strict=True):
        b_right, t_right = correct(b, r), correct(t, r)
        base_only += b_right and not t_right
        tuned_only += t_right and not b_right
    discordant = base_only + tuned_only
    if discordant == 0:
        return 1.0
    return float(binomtest(min(base_only, tuned_only), discordant, 0.5).pvalue)


def compare_correctness(
    base_right: Sequence[bool], tuned_right: Sequence[bool], n_resamples: int = 1000, seed: int = 0
) -> dict[str, object]:
    """Accuracy delta (tuned - base) of two per-row correctness lists, its 95% paired-bootstrap CI and McNemar's
    exact p-value: for comparing answers judged differently, e.g. the tuned model's replies against the base
    model's label probabilities."""
    base_arr, tuned_arr = np.asarray(base_right, dtype=float), np.asarray(tuned_right, dtype=float)
    n = len(base_arr)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_resamples, n))
    deltas = tuned_arr[idx].mean(axis=1) - base_arr[idx].mean(axis=1)
    base_only = int(np.sum((base_arr == 1) & (tuned_arr == 0)))
    tuned_only = int(np.sum((tuned_arr == 1) & (base_arr == 0)))
    discordant = base_only + tuned_only
    p_value = float(binomtest(min(base_only, tuned_only), discordant, 0.5).pvalue) if discordant else 1.0
    return {
        "delta": float(tuned_arr.mean() - base_arr.mean()),
        "ci95": [float(np.percentile(deltas, 2.5)), float(np.percentile(deltas, 97.5))],
        "test": "mcnemar",
        "p_value": p_value,
    }


def compare_means(
    base_values: Sequence[float], tuned_values: Sequence[float], n_resamples: int = 1000, seed: int = 0
) -> dict[str, object]:
    """Mean delta (tuned - base) of two per-row score lists, its 95% paired-bootstrap CI and the bootstrap's
    two-sided p-value: for per-row scores such as a grader's (both models resampled on the same rows)."""
    base_arr, tuned_arr = np.asarray(base_values, dtype=float), np.asarray(tuned_values, dtype=float)
    n = len(base_arr)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_resamples, n))
    deltas = tuned_arr[idx].mean(axis=1) - base_arr[idx].mean(axis=1)
    tail = min(np.sum(deltas <= 0), np.sum(deltas >= 0))
    return {
        "delta": float(tuned_arr.mean() - base_arr.mean()),
        "ci95": [float(np.percentile(deltas, 2.5)), float(np.percentile(deltas, 97.5))],
        "test": "paired_bootstrap",
        "p_value": float(min(1.0, 2 * (tail + 1) / (n_resamples + 1))),
    }
