"""The evaluate stage for recipes that are not chat generation (classify, tag, seq2seq, qa, lm, preference, ...).

The recipe predicts and scores (see ``tunesmith.recipes``); this module runs the base model (where an untrained
model can answer at all) and the tuned model on the same rows, scores simple baselines, compares the tuned
model with the base model (or, for a fresh task head, with the first baseline) by a paired bootstrap and
McNemar's test, and writes ``eval/``: ``metrics.json``, ``baselines.json``, ``comparison.json``,
``analysis.json`` and ``predictions.jsonl`` (and ``gate.json``). Graders (``eval.graders``) score text predictions
(seq2seq, qa) as they score chat replies.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from tunesmith.core.console import console
from tunesmith.core.errors import TunesmithError
from tunesmith.core.fs import atomic_dir, read_jsonl, write_json, write_jsonl
from tunesmith.curate.grading import grade_outputs
from tunesmith.data.records import Labeled, record_from_dict
from tunesmith.metrics.bias import counterfactual, flip_rate
from tunesmith.metrics.compare import compare
from tunesmith.pipeline.gate import gate_report
from tunesmith.pipeline.trained import TrainedRun
from tunesmith.recipes.contract import TaskEvaluation


def evaluate_task_run(
    run: TrainedRun, split: str = "test", chats: list[Any] | None = None, out_dir: Path | None = None
) -> dict[str, Any]:
    """Evaluate a trained run of a non-generative recipe; return ``{"base"?: {...}, "tuned": {...}}`` metrics.

    ``chats`` are already-converted records of another file (``tunesmith eval --data``), written to ``out_dir``.
    """
    import torch

    cfg, recipe = run.config, task_evaluation(run)
    if not run.dir.is_done("train"):
        raise TunesmithError(f"{run.dir.root}: evaluation needs a trained model; run `tunesmith train` first")
    records = chats if chats is not None else _split_records(run, split)
    out_dir = out_dir or (run.dir.eval if split == "test" else run.dir.root / f"eval-{split}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = run.tuned_tokenizer()
    console.print(f"[bold]evaluate[/]: {len(records)} rows ({cfg.task.name})")

    def score(predictions: list[Any], rows: list[Any]) -> dict[str, float]:
        return recipe.score_records(predictions, rows, cfg)

    probes = bias_probes(records) if cfg.eval.bias_probe else []
    base_model = run.load_base().to(device).eval()
    base = base_probed = None
    if cfg.eval.baseline and recipe.base_is_meaningful:
        base = recipe.predict_records(base_model, tokenizer, records, cfg, "base")
        if probes:
            base_probed = recipe.predict_records(base_model, tokenizer, [r for _, r in probes], cfg, "base bias")
    tuned_model = run.tuned_from_base(base_model).to(device).eval()
    tuned = recipe.predict_records(tuned_model, tokenizer, records, cfg, "tuned")
    tuned_probed = (
        recipe.predict_records(tuned_model, tokenizer, [r for _, r in probes], cfg, "tuned bias") if probes else []
    )

    metrics: dict[str, Any] = {"tuned": score(tuned, records)}
    if base is not None:
        metrics = {"base": score(base, records), **metrics}
    baseline_predictions = _baselines(run, records)
    baselines = {name: score(predictions, records) for name, predictions in baseline_predictions.items()}

    # The comparison answers "better than what the user had": the base model, or the simplest baseline for a
    # freshly initialised head (whose untrained predictions mean nothing).
    against, reference = ("base", base) if base is not None else next(iter(baseline_predictions.items()), (None, None))
    comparison = None
    if reference is not None:
        comparison = compare(
            score,
            reference,
            tuned,
            records,
            correct=_correct_fn(recipe),
            n_resamples=cfg.eval.bootstrap_samples,
            seed=cfg.training.seed,
        )
    analysis: dict[str, Any] = {"compared_with": against}
    details = recipe.details
    if details is not None:
        analysis["tuned"] = _analysis_entry(details(tuned, records, cfg))
        if base is not None:
            analysis["base"] = _analysis_entry(details(base, records, cfg))

    if probes:
        analysis.setdefault("tuned", {})["bias"] = bias_report(probes, records, tuned, tuned_probed)
        if base_probed is not None:
            analysis.setdefault("base", {})["bias"] = bias_report(probes, records, base, base_probed)

    graded = None
    if cfg.eval.graders:
        graded = _grade(run, records, base, tuned)
        for name, values in graded.metrics.items():
            metrics[name].update(values)
        if comparison is not None and against == "base":
            comparison.update(graded.comparison)
        analysis["graders"] = graded.analysis

    rows = []
    for i, record in enumerate(records):
        row: dict[str, Any] = {"source": record.source}
        if recipe.describe is not None:  # input and reference texts, for people reading predictions and the report
            row |= recipe.describe(record)
        if base is not None:
            row["base"] = base[i]
        row["tuned"] = tuned[i]
        if graded is not None:
            row["grades"] = graded.per_row[i]
        rows.append(row)
    with atomic_dir(out_dir) as tmp:
        write_jsonl(tmp / "predictions.jsonl", rows)
        write_json(tmp / "metrics.json", metrics)
        write_json(tmp / "baselines.json", baselines)
        write_json(tmp / "analysis.json", analysis)
        if comparison is not None:
            write_json(tmp / "comparison.json", comparison)
        if cfg.eval.gate:
            write_json(tmp / "gate.json", gate_report(cfg, metrics, comparison or {}, analysis))
    if out_dir == run.dir.eval:
        run.dir.mark_done("evaluate", {"rows": len(records)})
    return metrics


def _grade(run: TrainedRun, records: list[Any], base: list[Any] | None, tuned: list[Any]) -> Any:
    """Graders on text predictions; the item of a row is its input and reference (and label)."""
    describe = task_evaluation(run).describe
    if describe is None or not all(isinstance(p.get("prediction"), str) for p in tuned):
        raise TunesmithError(
            f"eval.graders: the '{run.config.task.name}' task's predictions are not text, so graders cannot read "
            "them; grade chat replies (sft) or generated text (seq2seq, qa)"
        )
    items = []
    for record in records:
        item: dict[str, Any] = dict(describe(record))
        if isinstance(record, Labeled):
            item["label"] = record.label
        items.append(item)
    texts = {"tuned": [p["prediction"] for p in tuned]}
    if base is not None:
        texts = {"base": [str(p["prediction"]) for p in base], **texts}
    return grade_outputs(run.config, texts, items, [i["input"] for i in items], [i["reference"] for i in items])


def _analysis_entry(details: dict[str, Any]) -> dict[str, Any]:
    """A model's analysis: its details, with an error analysis (``errors``) beside them where the report reads it."""
    details = dict(details)
    errors = details.pop("errors", None)
    return {"details": details, **({"errors": errors} if errors is not None else {})}


def bias_probes(records: list[Any]) -> list[tuple[int, Any]]:
    """Counterfactual copies of the labelled texts that mention a gendered or identity term (terms swapped)."""
    probes = []
    for index, record in enumerate(records):
        if isinstance(record, Labeled) and (swapped := counterfactual(record.text)) is not None:
            probes.append((index, dataclasses.replace(record, text=swapped)))
    return probes


def bias_report(
    probes: list[tuple[int, Any]], records: list[Any], predictions: list[Any], probed: list[Any]
) -> dict[str, Any]:
    """How often the predicted label changes when only identity terms change (and the first such rows)."""
    original = [predictions[i]["prediction"] for i, _ in probes]
    swapped = [p["prediction"] for p in probed]
    return {
        "rows_probed": len(probes),
        "flip_rate": flip_rate(original, swapped),
        "flips": [
            {"input": records[i].text, "counterfactual": probe.text, "answer": a, "swapped": b}
            for (i, probe), a, b in zip(probes, original, swapped, strict=True)
            if a != b
        ][:10],
    }


def _split_records(run: TrainedRun, split: str) -> list[Any]:
    path = run.dir.split(split)
    if not path.is_file():
        raise TunesmithError(f"{run.dir.root}: no prepared '{split}' split ({path} does not exist)")
    return [record_from_dict(row) for row in read_jsonl(path)]


def _baselines(run: TrainedRun, records: list[Any]) -> dict[str, list[Any]]:
    """Predictions of the recipe's simple baselines (e.g. majority class from the training split)."""
    make_baselines = task_evaluation(run).baselines
    if make_baselines is None:
        return {}
    train_path = run.dir.split("train")
    train = [record_from_dict(row) for row in read_jsonl(train_path)] if train_path.is_file() else []
    task = run.config.data.name
    train = [r for r in train if r.meta.get("task", task) == task]  # this task's rows of a multi-task mix
    return make_baselines(train, records, run.config)


def _correct_fn(recipe: TaskEvaluation) -> Any:
    """Per-row correctness for McNemar's test, if the task has it."""
    row_correct = recipe.row_correct
    if row_correct is None:
        return None
    return lambda prediction, record: bool(row_correct(prediction, record))


def task_evaluation(run: TrainedRun) -> TaskEvaluation:
    evaluation = run.recipe.evaluation
    if not isinstance(evaluation, TaskEvaluation):
        raise TunesmithError(f"{run.dir.root}: a '{run.config.task.name}' run is not evaluated by its predictions")
    return evaluation
