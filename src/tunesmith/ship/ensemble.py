"""Ensembles of evaluated runs: average their label probabilities (or vote), and adapter soups.

Members must be runs of one task, evaluated the same way on the same test rows. Chat runs combine their replies
(label probabilities averaged, else a vote); task-head runs (classify, tag) average their class probabilities
(``ensemble_tasks.py``). A soup merges the LoRA adapters of chat runs on the same base model into one adapter
with peft's ``add_weighted_adapter`` (linear, TIES or DARE) and evaluates it. Each ensemble is reported next to
its members.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunesmith.core.errors import TunesmithError
from tunesmith.core.fs import atomic_dir, read_jsonl, write_json, write_jsonl
from tunesmith.data.records import Chat
from tunesmith.metrics.text import extract_label, normalize
from tunesmith.recipes.contract import ChatEvaluation, TaskEvaluation
from tunesmith.ship.ensemble_tasks import ensemble_task_runs

if TYPE_CHECKING:
    from tunesmith.pipeline.trained import TrainedRun

SOUPS = {"linear": "linear", "ties": "ties", "dare": "dare_ties"}


def ensemble_runs(runs: list[TrainedRun], out_dir: Path, soup: str | None = None) -> dict[str, dict[str, float]]:
    """Evaluate the ensemble (and optionally the adapter soup) of ``runs``; write metrics and predictions."""
    if len(runs) < 2:
        raise TunesmithError("an ensemble needs at least two runs")
    names = [run.dir.root.name for run in runs]
    if len(set(names)) != len(names):
        raise TunesmithError(f"runs must have different names to be told apart: {', '.join(names)}")
    check_combinable(runs)
    first = runs[0]
    if isinstance(first.recipe.evaluation, TaskEvaluation):
        if soup:
            raise TunesmithError("--soup merges the LoRA adapters of chat runs; leave it out for task-head runs")
        return ensemble_task_runs(runs, out_dir)
    evaluation, labels = _chat_evaluation(first), _labels(first)
    rows = {run.dir.root.name: _predictions(run) for run in runs}
    _check_same_rows(runs, rows, labels)
    references = [row["reference"] for row in rows[names[0]]]
    members = {name: [_reply(evaluation, row) for row in member] for name, member in rows.items()}

    combined = combine(evaluation, list(members.values()), labels)
    method = "probability average" if combined[0].label_probs is not None else "majority vote"
    metrics = {name: evaluation.score(replies, references, labels) for name, replies in members.items()}
    metrics["ensemble"] = evaluation.score(combined, references, labels)
    extra: dict[str, list[Any]] = {}
    if soup:
        soup_replies = adapter_soup(runs, soup)
        metrics[f"soup_{soup}"] = evaluation.score(soup_replies, references, labels)
        extra[f"soup_{soup}"] = soup_replies
    predictions = []
    for i, reference in enumerate(references):
        row = {"input": rows[names[0]][i]["input"], "reference": reference}
        row |= {name: members[name][i].text for name in names}
        row["ensemble"] = combined[i].text
        row |= {name: replies[i].text for name, replies in extra.items()}
        predictions.append(row)
    with atomic_dir(out_dir) as tmp:
        write_json(tmp / "metrics.json", {"method": method, "members": names, "metrics": metrics})
        write_jsonl(tmp / "predictions.jsonl", predictions)
    return metrics


def check_combinable(runs: list[TrainedRun]) -> None:
    """Refuse runs that cannot be combined: a multi-head run, different tasks, or one task answered two ways
    (a classifier's head and a chat model's label words)."""
    first = runs[0]
    for run in runs:
        if run.config.multihead:
            raise TunesmithError(
                f"{run.dir.root}: a multi-head run has a model per task; an ensemble combines runs of one task"
            )
        if run.config.task.name != first.config.task.name:
            raise TunesmithError(
                "runs of different tasks cannot be combined: "
                + ", ".join(f"{r.dir.root.name} is {r.config.task.name}" for r in runs)
            )
        if type(run.recipe.evaluation) is not type(first.recipe.evaluation):
            raise TunesmithError(
                "these runs answer in different ways and cannot be combined: "
                + ", ".join(f"{r.dir.root.name} {_answers(r)}" for r in runs)
            )


def _answers(run: TrainedRun) -> str:
    evaluation = run.recipe.evaluation
    if isinstance(evaluation, ChatEvaluation):
        return "with generated replies (a chat model)"
    return "with a task head's predictions" if isinstance(evaluation, TaskEvaluation) else "by its own evaluation"


def combine(evaluation: ChatEvaluation, members: list[list[Any]], labels: list[str] | None) -> list[Any]:
    """One reply per row: the label with the highest mean probability, else the most common answer.

    Votes are counted on extracted labels (or normalised text); a tie goes to the earliest member's answer.
    """
    combined = []
    for replies in zip(*members, strict=True):
        if labels and all(r.label_probs is not None for r in replies):
            mean = [sum(r.label_probs[k] for r in replies) / len(replies) for k in range(len(labels))]
            best = max(range(len(labels)), key=lambda k: mean[k])
            combined.append(evaluation.reply(labels[best], mean[best], mean))
            continue
        answers = [extract_label(r.text, labels) if labels else normalize(r.text) for r in replies]
        counts = Counter(a for a in answers if a is not None)
        if not counts:
            combined.append(evaluation.reply(replies[0].text, replies[0].confidence))
            continue
        top = max(counts.values())
        winner = next(a for a in answers if a is not None and counts[a] == top)
        chosen = replies[answers.index(winner)]
        combined.append(evaluation.reply(chosen.text, chosen.confidence))
    return combined


def adapter_soup(runs: list[TrainedRun], method: str) -> list[Any]:
    """Predictions of one adapter made by merging the runs' LoRA adapters (equal weights)."""
    import torch
    from peft import PeftModel

    from tunesmith.models.load import load_causal_lm

    if method not in SOUPS:
        raise TunesmithError(f"--soup: expected one of {', '.join(SOUPS)}, got {method!r}")
    first = runs[0]
    for run in runs:
        if run.config.method.name != "lora" or run.config.model.name != first.config.model.name:
            raise TunesmithError(
                f"{run.dir.root}: a soup needs LoRA runs on the same base model ({first.config.model.name})"
            )
    model = load_causal_lm(first.config.model)
    names = [f"member{i}" for i in range(len(runs))]
    model = PeftModel.from_pretrained(model, str(first.dir.model), adapter_name=names[0])
    for name, run in zip(names[1:], runs[1:], strict=True):
        model.load_adapter(str(run.dir.model), adapter_name=name)
    kwargs: dict[str, Any] = {"density": 0.5} if method in ("ties", "dare") else {}
    model.add_weighted_adapter(names, [1.0 / len(names)] * len(names), "soup", combination_type=SOUPS[method], **kwargs)
    model.set_adapter("soup")
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    chats = [Chat.from_dict(r) for r in read_jsonl(first.dir.split("test"))]
    cfg = first.config.eval
    return _chat_evaluation(first).generate_replies(
        model, first.tuned_tokenizer(), chats, cfg.max_new_tokens, cfg.batch_size, f"soup {method}", _labels(first)
    )


def _chat_evaluation(run: TrainedRun) -> ChatEvaluation:
    evaluation = run.recipe.evaluation
    if not isinstance(evaluation, ChatEvaluation):
        raise TunesmithError(
            f"{run.dir.root}: ensembles combine generated replies; a {run.config.task.name} run's predictions are not"
        )
    return evaluation


def _labels(run: TrainedRun) -> list[str] | None:
    return run.config.data.labels


def _predictions(run: TrainedRun) -> list[dict[str, Any]]:
    path = run.dir.eval / "predictions.jsonl"
    if not path.is_file():
        raise TunesmithError(f"{run.dir.root}: not evaluated yet (no eval/predictions.jsonl); run `tunesmith eval`")
    return read_jsonl(path)


def _check_same_rows(runs: list[TrainedRun], rows: dict[str, list[dict[str, Any]]], labels: list[str] | None) -> None:
    names = list(rows)
    first_refs = [(r["input"], r["reference"]) for r in rows[names[0]]]
    for run, name in zip(runs[1:], names[1:], strict=True):
        if [(r["input"], r["reference"]) for r in rows[name]] != first_refs:
            raise TunesmithError(f"{run.dir.root} was evaluated on different test rows than {runs[0].dir.root}")
        if _labels(run) != labels:
            raise TunesmithError(f"{run.dir.root} has labels {_labels(run)}, {runs[0].dir.root} has {labels}")


def _reply(evaluation: ChatEvaluation, row: dict[str, Any]) -> Any:
    return evaluation.reply(row["tuned"], row.get("tuned_confidence", 0.0), row.get("tuned_label_probs"))
