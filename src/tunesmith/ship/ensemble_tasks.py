"""Ensembles of task-head runs (classify, tag): their class probabilities averaged, row by row.

Members must be runs of the same task, with the same label set, evaluated on the same test rows. Each task says
in its recipe (``TaskEvaluation.ensemble``) where a run's probabilities come from (a classifier's are in its
evaluation predictions; a tagger's are recomputed per word) and how averaged probabilities become a prediction;
labels are matched by name, so runs whose heads order them differently still combine. A tagger's probabilities
are averaged word by word (at each word's first sub-token), so every member must see the same words of a row.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tunesmith.core.errors import TunesmithError
from tunesmith.core.fs import atomic_dir, read_jsonl, write_json, write_jsonl
from tunesmith.data.records import Labeled, Record, record_from_dict, record_to_dict
from tunesmith.recipes.contract import TaskEnsemble, TaskEvaluation

if TYPE_CHECKING:
    from tunesmith.pipeline.trained import TrainedRun

METHOD = "probability average"


def ensemble_task_runs(runs: list[TrainedRun], out_dir: Path) -> dict[str, dict[str, float]]:
    """Average the members' probabilities on their common test rows; write metrics and predictions like the chat
    ensemble (``metrics.json``: method, members, metrics; ``predictions.jsonl``: a row per test row)."""
    first = runs[0]
    evaluation, ensemble = _task_ensemble(first)
    names = [run.dir.root.name for run in runs]
    records = _test_records(first)
    labels = _labels(first)
    members = {}
    for run, name in zip(runs, names, strict=True):
        if run is not first:
            _check_compatible(first, run, records, labels)
        members[name] = _predictions(run, len(records))
    cfg = first.config
    probabilities = [
        _aligned(run, ensemble.probabilities(run, records, members[name]), labels)
        for run, name in zip(runs, names, strict=True)
    ]
    averaged = average(probabilities, names)
    combined = [ensemble.prediction(labels, probs.tolist(), r) for probs, r in zip(averaged, records, strict=True)]
    metrics = {name: evaluation.score_records(predictions, records, cfg) for name, predictions in members.items()}
    metrics["ensemble"] = evaluation.score_records(combined, records, cfg)
    rows = []
    for i, record in enumerate(records):
        row: dict[str, Any] = {"source": record.source, **_describe(evaluation, record)}
        row |= {name: members[name][i] for name in names}
        row["ensemble"] = combined[i]
        rows.append(row)
    with atomic_dir(out_dir) as tmp:
        write_json(tmp / "metrics.json", {"method": METHOD, "members": names, "labels": labels, "metrics": metrics})
        write_jsonl(tmp / "predictions.jsonl", rows)
    return metrics


def average(members: list[list[torch.Tensor]], names: list[str]) -> list[torch.Tensor]:
    """The mean of the members' probabilities, row by row; rows must have the same shape in every member."""
    out = []
    for row, probabilities in enumerate(zip(*members, strict=True)):
        shapes = {tuple(p.shape) for p in probabilities}
        if len(shapes) > 1:
            raise TunesmithError(
                f"test row {row + 1}: the runs see different parts of it ({', '.join(names)}: shapes "
                f"{[tuple(p.shape) for p in probabilities]}); their tokenizers or training.max_seq_len cut it "
                "differently, and an ensemble averages the same words' probabilities.\n  fix: combine runs with the "
                "same tokenizer and training.max_seq_len"
            )
        out.append(torch.stack(probabilities).mean(0))
    return out


def _task_ensemble(run: TrainedRun) -> tuple[TaskEvaluation, TaskEnsemble]:
    evaluation = run.recipe.evaluation
    assert isinstance(evaluation, TaskEvaluation)  # checked by ensemble_runs
    if evaluation.ensemble is None:
        raise TunesmithError(
            f"{run.dir.root}: a {run.config.task.name} run's predictions cannot be averaged; ensembles average "
            "class probabilities (classify, tag) or combine chat replies (sft and other chat tasks)"
        )
    return evaluation, evaluation.ensemble


def _labels(run: TrainedRun) -> list[str]:
    labels = run.labels()
    if not labels:
        raise TunesmithError(f"{run.dir.root}: its label set is unknown (no prepared training split)")
    return labels


def _test_records(run: TrainedRun) -> list[Record]:
    path = run.dir.split("test")
    if not path.is_file():
        raise TunesmithError(f"{run.dir.root}: no prepared test split ({path}); an ensemble is evaluated on it")
    return [record_from_dict(row) for row in read_jsonl(path)]


def _row_key(record: Record) -> dict[str, Any]:
    """A row as the ensemble compares it: its content, not where it was read from."""
    return {k: v for k, v in record_to_dict(record).items() if k not in ("source", "meta")}


def _check_compatible(first: TrainedRun, run: TrainedRun, records: list[Record], labels: list[str]) -> None:
    if [_row_key(r) for r in _test_records(run)] != [_row_key(r) for r in records]:
        raise TunesmithError(f"{run.dir.root} was evaluated on different test rows than {first.dir.root}")
    other = _labels(run)
    if sorted(other) != sorted(labels):
        raise TunesmithError(
            f"{run.dir.root} has labels {other}, {first.dir.root} has {labels}; an ensemble averages the "
            "probabilities of the same labels"
        )


def _predictions(run: TrainedRun, rows: int) -> list[dict[str, Any]]:
    path = run.dir.eval / "predictions.jsonl"
    if not path.is_file():
        raise TunesmithError(f"{run.dir.root}: not evaluated yet (no eval/predictions.jsonl); run `tunesmith eval`")
    predictions = [row["tuned"] for row in read_jsonl(path)]
    if len(predictions) != rows:
        raise TunesmithError(
            f"{run.dir.root}: eval/predictions.jsonl has {len(predictions)} rows, its test split {rows}; "
            "evaluate it again (`tunesmith eval`)"
        )
    return predictions


def _aligned(run: TrainedRun, probabilities: list[Any], labels: list[str]) -> list[torch.Tensor]:
    """The run's probabilities with their last axis in ``labels``' order (runs may order a label set differently)."""
    order = torch.tensor([_labels(run).index(label) for label in labels])
    return [_reorder(p, order) for p in probabilities]


def _reorder(probabilities: Any, order: torch.Tensor) -> torch.Tensor:
    tensor = torch.tensor(probabilities, dtype=torch.float64)
    if tensor.numel() == 0:
        return tensor.reshape(0, len(order))
    return tensor.index_select(-1, order)


def _describe(evaluation: TaskEvaluation, record: Record) -> dict[str, str]:
    """The row's input and reference texts, for people reading the predictions."""
    if evaluation.describe is not None:
        return evaluation.describe(record)
    if isinstance(record, Labeled):
        text = f"{record.text}\n\n{record.text_pair}" if record.text_pair else record.text
        return {"input": text, "reference": record.label}
    return {}
