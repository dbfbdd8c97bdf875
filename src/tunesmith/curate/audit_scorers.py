"""The class probabilities the label audit ranks rows by: for each labelled row, how likely each class is according
to a model that did not learn from that row (out-of-fold), so a wrong label stands out.

- ``embeddings`` (default): frozen sentence embeddings + logistic regression, k-fold (seconds).
- ``finetune``: an encoder (``minilm-l6``) with a classification head, fine-tuned briefly on k-1 folds and
  predicting the k-th, for each fold. Written as a plain loop here: the engine is a sibling layer, and a few epochs
  of AdamW on one CPU process need none of its machinery.
- a trained run's classifier (``tunesmith data audit --run``): its probabilities; out-of-fold only if the run did
  not train on the audited rows, which the report says. By default ``stacked_scorer`` then refits them on the
  audited file's own labels, k-fold (a logistic regression on the run's log-probabilities and the rows' sentence
  embeddings): a run trained elsewhere brings its own class balance and label-word bias, which the audited labels,
  mostly right, correct (bench/audit_flips.py measures the gain). Several runs are stacked (or averaged) together.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tunesmith.core.progress import Progress

SCORERS = ("embeddings", "finetune")


@dataclass
class Scores:
    probs: np.ndarray  # [rows, classes]
    method: str  # what the report says about how they were made
    scorer: str  # finetune | embeddings | run
    out_of_fold: bool = True  # no row's probabilities come from a model that learned from that row
    model: str = ""  # the model behind the probabilities (a name, or a run's directory and base model)


Scorer = Callable[[Sequence[str], np.ndarray, np.ndarray, list[str], int, int], Scores]
"""(texts, their row numbers in the file, class index per row, classes, folds, seed) -> Scores; only labelled rows
are scored, so the row numbers say which of the file's rows (and embeddings) the texts are."""


def _folds(y: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold

    return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


def _logistic_out_of_fold(features: np.ndarray, y: np.ndarray, classes: int, k: int, seed: int) -> np.ndarray:
    """[rows, classes]: each fold's probabilities from a logistic regression fit on the other folds."""
    from sklearn.linear_model import LogisticRegression

    probs = np.zeros((len(y), classes))
    for train, test in _folds(y, k, seed):
        classifier = LogisticRegression(max_iter=5000, C=1.0).fit(features[train], y[train])
        probs[np.ix_(test, classifier.classes_)] = classifier.predict_proba(features[test])
    return probs


def embedding_scorer(embeddings: np.ndarray, model: str = "minilm-l6") -> Scorer:
    """Logistic regression on frozen sentence embeddings (one unit vector per row of the file, from ``model``),
    out-of-fold."""

    def score(texts: Sequence[str], rows: np.ndarray, y: np.ndarray, classes: list[str], k: int, seed: int) -> Scores:
        probs = _logistic_out_of_fold(embeddings[rows], y, len(classes), k, seed)
        method = f"sentence embeddings + logistic regression, {k}-fold out-of-fold probabilities"
        return Scores(probs, method, "embeddings", model=f"logistic regression on {model} embeddings")

    return score


def stacked_scorer(bases: Sequence[Scorer], embeddings: np.ndarray, model: str = "minilm-l6") -> Scorer:
    """The ``bases``' probabilities refit on the audited file's own labels: a logistic regression on their
    log-probabilities and the rows' sentence embeddings (from ``model``), fit k-fold so that no row's label shapes
    its own probabilities. Out-of-fold exactly when every base's probabilities are."""

    def score(texts: Sequence[str], rows: np.ndarray, y: np.ndarray, classes: list[str], k: int, seed: int) -> Scores:
        each = [base(texts, rows, y, classes, k, seed) for base in bases]
        features = np.hstack([np.log(s.probs.clip(min=1e-6)) for s in each] + [embeddings[rows]])
        probs = _logistic_out_of_fold(features, y, len(classes), k, seed)
        joined = _joined(each, probs)
        joined.method += (
            f"; stacked: a logistic regression on {'those' if len(each) == 1 else 'their'} log-probabilities and "
            f"{model} embeddings, fit on this file's labels, {k}-fold out-of-fold"
        )
        joined.model += f", stacked with {model}"
        return joined

    return score


def averaged_scorer(bases: Sequence[Scorer]) -> Scorer:
    """The mean of the ``bases``' probabilities."""

    def score(texts: Sequence[str], rows: np.ndarray, y: np.ndarray, classes: list[str], k: int, seed: int) -> Scores:
        each = [base(texts, rows, y, classes, k, seed) for base in bases]
        joined = _joined(each, np.mean([s.probs for s in each], axis=0))
        joined.method += "; their probabilities averaged"
        return joined

    return score


def _joined(each: list[Scores], probs: np.ndarray) -> Scores:
    """One description of several scorers' probabilities, combined into ``probs``."""
    if len(each) == 1:
        return Scores(probs, each[0].method, each[0].scorer, each[0].out_of_fold, each[0].model)
    scorers = list(dict.fromkeys(s.scorer for s in each))
    return Scores(
        probs,
        " | ".join(f"({i}) {s.method}" for i, s in enumerate(each, 1)),
        scorers[0] if len(scorers) == 1 else "+".join(scorers),
        all(s.out_of_fold for s in each),
        " + ".join(s.model for s in each),
    )


@dataclass(frozen=True)
class FineTune:
    """How each fold's head is trained (defaults measured on SST-2: bench/audit_flips.py)."""

    model: str = "minilm-l6"
    epochs: int = 3
    batch_size: int = 16
    learning_rate: float = 1e-4
    max_length: int = 128


def finetune_scorer(settings: FineTune = FineTune()) -> Scorer:
    """An encoder with a fresh classification head fine-tuned on the other folds, predicting each fold."""

    def score(texts: Sequence[str], rows: np.ndarray, y: np.ndarray, classes: list[str], k: int, seed: int) -> Scores:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from tunesmith.models.load import quiet_transformers
        from tunesmith.models.resolve import resolve_model

        quiet_transformers()
        location = resolve_model(settings.model).location
        tokenizer = AutoTokenizer.from_pretrained(location)
        ids = tokenizer(list(texts), truncation=True, max_length=settings.max_length)["input_ids"]
        folds = _folds(y, k, seed)
        steps = sum(settings.epochs * math.ceil(len(train) / settings.batch_size) for train, _ in folds)
        steps += sum(math.ceil(len(test) / (4 * settings.batch_size)) for _, test in folds)  # prediction batches
        probs = np.zeros((len(y), len(classes)))
        with Progress(steps, f"audit: fine-tune {settings.model}, {k} folds", unit="batches") as progress:
            for fold, (train, test) in enumerate(folds):
                torch.manual_seed(seed + fold)
                model = AutoModelForSequenceClassification.from_pretrained(location, num_labels=len(classes))
                _train(model, tokenizer, [ids[i] for i in train], y[train], settings, seed + fold, progress)
                probs[test] = _predict(model, tokenizer, [ids[i] for i in test], settings.batch_size * 4, progress)
        method = (
            f"{settings.model} with a classification head fine-tuned {settings.epochs} epochs per fold, {k}-fold "
            "out-of-fold probabilities"
        )
        return Scores(probs, method, "finetune", model=settings.model)

    return score


def _batch(tokenizer: Any, rows: list[list[int]]) -> dict[str, Any]:
    return tokenizer.pad({"input_ids": rows}, return_tensors="pt")


def _train(
    model: Any, tokenizer: Any, ids: list[list[int]], y: np.ndarray, settings: FineTune, seed: int, progress: Progress
) -> None:
    import torch
    import torch.nn.functional as F
    from transformers import get_linear_schedule_with_warmup

    rng = np.random.default_rng(seed)
    per_epoch = math.ceil(len(ids) / settings.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(optimizer, per_epoch // 2, settings.epochs * per_epoch)
    labels = torch.tensor(y)
    model.train()
    for _ in range(settings.epochs):
        order = rng.permutation(len(ids))
        for start in range(0, len(order), settings.batch_size):
            rows = order[start : start + settings.batch_size]
            loss = F.cross_entropy(model(**_batch(tokenizer, [ids[i] for i in rows])).logits, labels[rows])
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            progress.advance()


def _predict(model: Any, tokenizer: Any, ids: list[list[int]], batch_size: int, progress: Progress) -> np.ndarray:
    import torch

    model.eval()
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths pad less
    out = np.zeros((len(ids), model.config.num_labels))
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            out[rows] = model(**_batch(tokenizer, [ids[i] for i in rows])).logits.softmax(-1).numpy()
            progress.advance()
    return out
