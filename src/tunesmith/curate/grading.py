"""Graders on two models' answers, for every evaluation (chat replies, task predictions, RL policies): every
``eval.graders`` grader scores the base and the tuned model's answers on the same rows; each grader's mean (and pass
rate) becomes the metric ``grader:<name>`` with a paired-bootstrap CI of tuned - base, and the lowest-scored rows
are kept for the report. Here beside the judges, below the recipes, so RL evaluation can use it too."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tunesmith.core.config import RunConfig
from tunesmith.core.console import console
from tunesmith.core.errors import ConfigError
from tunesmith.curate.judges import grading_context
from tunesmith.data.records import Chat
from tunesmith.metrics.compare import compare_means
from tunesmith.metrics.graders import Graded, GraderSetupError, grade_all, make_sample

PREFIX = "grader:"


@dataclass
class GraderResults:
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> {grader:<name>[:pass_rate]: value}
    comparison: dict[str, dict[str, Any]] = field(default_factory=dict)  # metric -> delta, ci95, test, p_value
    analysis: dict[str, Any] = field(default_factory=dict)  # grader name -> per-model summary, lowest rows
    per_row: list[dict[str, dict[str, float]]] = field(default_factory=list)  # row -> grader -> model -> score


def chat_item(chat: Chat) -> dict[str, Any]:
    """The ``item`` namespace of a test chat: ``input`` (the last user message), ``reference`` (the reference
    reply), ``messages`` (the prompt) and ``label`` where it has one."""
    prompt = chat.prompt_messages()
    item: dict[str, Any] = {
        "input": prompt[-1].content if prompt else "",
        "reference": chat.reference(),
        "messages": [{"role": m.role, "content": m.content} for m in prompt],
    }
    if "label" in chat.meta:
        item.setdefault("label", chat.meta["label"])
    return item


def grade_outputs(
    cfg: RunConfig,
    texts: dict[str, Sequence[str]],
    items: Sequence[dict[str, Any]],
    inputs: Sequence[str],
    references: Sequence[str],
) -> GraderResults:
    """Grade each model's answers (``texts``: model -> one answer per row, "base" and/or "tuned")."""
    graders = cfg.eval.graders
    context = grading_context(graders, cfg.eval.grading)
    console.print(f"[bold]graders[/]: {', '.join(g.name for g in graders)} on {len(items)} rows")
    graded: dict[str, dict[str, Graded]] = {}
    for model, answers in texts.items():
        try:
            graded[model] = grade_all(graders, [make_sample(a) for a in answers], items, context)
        except GraderSetupError as exc:
            raise ConfigError(f"eval.graders: {exc}") from None
    results = GraderResults(per_row=[{} for _ in items])
    for model, by_name in graded.items():
        values: dict[str, float] = {}
        for name, result in by_name.items():
            summary = result.summary()
            values[PREFIX + name] = summary["mean"]
            if "pass_rate" in summary:
                values[f"{PREFIX}{name}:pass_rate"] = summary["pass_rate"]
            for i, score in enumerate(result.scores):
                results.per_row[i].setdefault(name, {})[model] = round(score, 5)
        results.metrics[model] = values
    base, tuned = graded.get("base"), graded["tuned"]
    keep = cfg.eval.grading.lowest_samples
    for grader in graders:
        name = grader.name
        results.analysis[name] = {
            "type": grader.type,
            **{model: by_name[name].summary() for model, by_name in graded.items()},
            "lowest": _lowest(tuned[name], base[name] if base else None, texts, inputs, references, keep),
        }
        if base is not None:
            bootstrap = {"n_resamples": cfg.eval.bootstrap_samples, "seed": cfg.training.seed}
            results.comparison[PREFIX + name] = compare_means(base[name].scores, tuned[name].scores, **bootstrap)
            base_passed, tuned_passed = base[name].passed, tuned[name].passed
            if all(p is not None for p in [*base_passed, *tuned_passed]):
                results.comparison[f"{PREFIX}{name}:pass_rate"] = compare_means(
                    [float(bool(p)) for p in base_passed], [float(bool(p)) for p in tuned_passed], **bootstrap
                )
    return results


def _lowest(
    tuned: Graded,
    base: Graded | None,
    texts: dict[str, Sequence[str]],
    inputs: Sequence[str],
    references: Sequence[str],
    keep: int,
) -> list[dict[str, Any]]:
    """The tuned model's ``keep`` lowest-scored rows, with the base model's answer and score beside them."""
    order = sorted(range(len(tuned.scores)), key=lambda i: (tuned.scores[i], i))[:keep]
    rows = []
    for i in order:
        row: dict[str, Any] = {"row": i, "input": inputs[i], "reference": references[i]}
        row.update(tuned=texts["tuned"][i], tuned_score=tuned.scores[i], error=tuned.errors[i])
        if base is not None:
            row.update(base=texts["base"][i], base_score=base.scores[i])
        rows.append(row)
    return rows
