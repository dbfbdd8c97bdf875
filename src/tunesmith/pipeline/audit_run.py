"""A trained classification run as the label audit's scorer (``tunesmith data audit --run RUN``): its class
probabilities for every row, mapped onto the audited file's labels through the run's ``data.label_names``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tunesmith.core.errors import TunesmithError
from tunesmith.curate.audit_scorers import Scorer, Scores
from tunesmith.pipeline.trained import TrainedRun


def run_scorer(path: str | Path) -> Scorer:
    run = TrainedRun.from_dir(path)
    predict = run.recipe.predict_texts
    if predict is None:
        raise TunesmithError(
            f"{path}: a '{run.config.task.name}' run gives no class probabilities; --run takes a classify run"
        )

    def score(texts: Sequence[str], y: np.ndarray, classes: list[str], k: int, seed: int) -> Scores:
        model, tokenizer = run.load_tuned()
        predictions = predict(model, tokenizer, list(texts), run.config)
        names = run.config.data.label_names
        probs = np.zeros((len(texts), len(classes)))
        for i, prediction in enumerate(predictions):
            for j, label in enumerate(classes):
                word = names.get(label, label)
                if word not in prediction["probabilities"]:
                    known = ", ".join(prediction["probabilities"])
                    raise TunesmithError(
                        f"{path}: the file's label {label!r} is not one of the run's classes ({known}); "
                        "audit a file labelled with the run's label set"
                    )
                probs[i, j] = prediction["probabilities"][word]
        probs /= probs.sum(1, keepdims=True).clip(min=1e-12)  # the run may know more classes than the file uses
        method = (
            f"the trained run {path} ({run.config.model.name}, {run.config.method.name}); not out-of-fold: if it "
            "trained on these rows its probabilities favour their labels, wrong ones included; cleanlab"
        )
        return Scores(probs, method, "run", out_of_fold=False)

    return score
