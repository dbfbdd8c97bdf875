"""A trained run as the label audit's scorer (``tunesmith data audit --run RUN``): its class probabilities for every
row, mapped onto the audited file's labels through the run's ``data.label_names``.

Two kinds of run can score, the same ones that can annotate (``pipeline.annotators``):

- a ``classify`` run: its head's class probabilities (or, with ``head: generation``, its label words' likelihoods);
- an ``sft`` run trained to answer with label words (the quickstart): each label word's likelihood after the run's
  own prompt (``data.prompt_template``), renormalised over the label set.

The probabilities are held out only for rows the run did not train on; the scorer counts the audited rows found
among the run's prepared training rows and the report says so.
"""

from __future__ import annotations

import json
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.core.errors import TunesmithError
from tunesmith.curate.audit_scorers import Scorer, Scores
from tunesmith.data.labelfile import Item, LabelFile
from tunesmith.pipeline.annotators import load_scorer, run_label_set
from tunesmith.pipeline.trained import TrainedRun

BATCH_SIZE = 16


def run_scorer(path: str | Path, batch_size: int = BATCH_SIZE) -> Scorer:
    """The run's probabilities as an audit scorer; they depend only on the texts, so they are computed once per set
    of texts and reused (a bench audits the same rows under several plantings)."""
    run = TrainedRun.from_dir(path)
    kind = run.recipe.annotator
    if kind is None:
        raise TunesmithError(
            f"{path}: a '{run.config.task.name}' run gives no class probabilities; --run takes a classify run or an "
            "sft run that answers with label words (data.label_names set)"
        )
    if kind == "label_words" and len(run.config.data.label_names or {}) < 2:
        raise TunesmithError(
            f"{path}: this sft run has no data.label_names, so it has no label words to score; --run takes a "
            "classify run or an sft run trained with data.label_names (like examples/quickstart.yaml)"
        )
    fields = _template_fields(run.config.data.prompt_template)
    if len(fields) > 1:
        raise TunesmithError(
            f"{path}: the run's data.prompt_template fills {len(fields)} columns ({', '.join(fields)}); the audit "
            "scores one text column, so it takes runs whose template has at most one field"
        )
    cache: dict[tuple[str, ...], np.ndarray] = {}
    names = {str(k): str(v) for k, v in (run.config.data.label_names or {}).items()}
    words: list[str] = []

    def score(texts: Sequence[str], rows: np.ndarray, y: np.ndarray, classes: list[str], k: int, seed: int) -> Scores:
        key = tuple(texts)
        if key not in cache:
            cache[key], found = _probabilities(run, Path(path), kind, list(texts), fields, batch_size)
            words[:] = found
        columns = []
        for label in classes:
            word = names.get(label, label)
            if word not in words:
                raise TunesmithError(
                    f"{path}: the file's label {label!r} is not one of the run's classes ({', '.join(words)}); "
                    "audit a file labelled with the run's label set"
                )
            columns.append(words.index(word))
        probs = cache[key][:, columns]
        probs = probs / probs.sum(1, keepdims=True).clip(min=1e-12)  # the run may know more classes than the file
        seen = trained_on(run, texts)
        how = "its head's class probabilities" if kind == "classifier" else "its label words' likelihoods"
        held = (
            "held out: none of these rows is among its training rows"
            if not seen
            else f"NOT held out: {seen} of these rows are among its training rows, and their probabilities favour "
            "the labels it learned, wrong ones included"
        )
        model = f"{run.config.model.name} ({run.config.task.name}, {run.config.method.name}) from {path}"
        method = f"the trained run {path}: {how}; {held}"
        return Scores(probs, method, "run", out_of_fold=not seen, model=model)

    return score


def _probabilities(
    run: TrainedRun, path: Path, kind: str, texts: list[str], fields: list[str], batch_size: int
) -> tuple[np.ndarray, list[str]]:
    """[rows, run classes] probabilities and the run's class words, in order."""
    if kind == "classifier":
        predict = run.recipe.predict_texts
        assert predict is not None  # a recipe whose annotator is "classifier" declares predict_texts
        model, tokenizer = run.load_tuned()
        predictions = predict(model, tokenizer, texts, run.config)
        words = list(predictions[0]["probabilities"]) if predictions else []
        return np.array([[p["probabilities"][w] for w in words] for p in predictions]), words
    labels = run_label_set(str(path))
    # The run's prompt is filled from each row's columns: give the audited text under the template's one field.
    items = [Item(i, i + 1, {"text": text, **dict.fromkeys(fields, text)}) for i, text in enumerate(texts)]
    data = LabelFile(path, items, [], ["text", *fields], "text")
    scorer = load_scorer(str(path), batch_size, calibrate=False)  # a trained run's own probabilities
    return scorer.probabilities(data, items, labels, []), list(labels.words)


def _template_fields(template: str | None) -> list[str]:
    if not template:
        return []
    return sorted({name for _, name, _, _ in string.Formatter().parse(template) if name})


def _squeeze(text: str) -> str:
    """Whitespace collapsed, as data preparation normalises it."""
    return " ".join(text.split())


def trained_on(run: TrainedRun, texts: Sequence[str]) -> int:
    """How many of ``texts`` the run trained on: matches (whitespace collapsed) of a prepared training row's text,
    or of its user message (for an sft run, the text filled into its prompt template)."""
    split = run.dir.split("train")
    if not split.is_file():
        return 0
    seen: set[str] = set()
    with split.open(encoding="utf-8") as handle:
        for line in handle:
            row: dict[str, Any] = json.loads(line)
            if isinstance(row.get("text"), str):
                seen.add(_squeeze(row["text"]))
            for message in row.get("messages") or []:
                if message.get("role") == "user" and isinstance(message.get("content"), str):
                    seen.add(_squeeze(message["content"]))
    template = run.config.data.prompt_template
    fields = _template_fields(template)
    count = 0
    for text in texts:
        forms = {_squeeze(text)}
        if template and len(fields) == 1:
            forms.add(_squeeze(template.format(**{fields[0]: text.strip()})))
        count += bool(forms & seen)
    return count
