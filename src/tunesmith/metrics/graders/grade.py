"""Score samples with graders: every type of OpenAI's grader JSON, on batches (one python process, one batch of
embeddings or judge calls per grader), each sample's score with its pass/fail and, where it failed to grade, why."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tunesmith.core.formula import FormulaError, parse_formula
from tunesmith.metrics.graders.model_graders import Judge, label_model, score_model
from tunesmith.metrics.graders.sandbox import run_python_grader
from tunesmith.metrics.graders.templates import TemplateError, render
from tunesmith.metrics.graders.text_checks import Embed, similarity, string_check


@dataclass
class GradingContext:
    """What graders may need beyond the samples: injected by the caller, so this layer loads no model."""

    judge: Judge | None = None  # score_model / label_model
    embed: Embed | None = None  # text_similarity cosine
    judge_model: str | None = None  # replaces every model grader's model when set
    python_timeout_s: float = 10.0
    python_memory_mb: int = 1024


@dataclass
class Graded:
    """One grader's results over a batch, index-aligned with the samples."""

    name: str
    scores: list[float]
    passed: list[bool | None]
    errors: list[str | None]
    details: list[dict[str, Any]] = field(default_factory=list)  # multi: sub-scores; label_model: the label

    def summary(self) -> dict[str, float]:
        """Mean score, pass rate (when pass/fail is defined) and the share of samples that failed to grade."""
        n = max(len(self.scores), 1)
        out = {"mean": sum(self.scores) / n, "errors": sum(e is not None for e in self.errors) / n}
        decided = [p for p in self.passed if p is not None]
        if decided and len(decided) == len(self.passed):
            out["pass_rate"] = sum(decided) / n
        return out


class GraderSetupError(RuntimeError):
    """A grader cannot run at all here (no judge given, a metric's resource missing)."""


def grade(
    grader: Any, samples: Sequence[dict[str, Any]], items: Sequence[dict[str, Any]], context: GradingContext
) -> Graded:
    """Score every (sample, item) with one grader."""
    kind = grader.type
    if kind in ("string_check", "text_similarity"):
        texts, references, errors = _render_pairs(grader, samples, items)
        if kind == "string_check":
            scores = [string_check(grader.operation, t, r) for t, r in zip(texts, references, strict=True)]
        else:
            scores = similarity(grader.evaluation_metric, texts, references, context.embed)
        scores = [0.0 if e else s for s, e in zip(scores, errors, strict=True)]
        passed = [s == 1.0 for s in scores] if kind == "string_check" else _threshold(grader, scores)
        return Graded(grader.name, scores, passed, errors)
    if kind == "python":
        outcomes = run_python_grader(
            grader.source, list(zip(samples, items, strict=True)), context.python_timeout_s, context.python_memory_mb
        )
        scores = [o.score for o in outcomes]
        return Graded(grader.name, scores, _threshold(grader, scores), [o.error for o in outcomes])
    if kind in ("score_model", "label_model"):
        if context.judge is None:
            raise GraderSetupError(f"grader {grader.name!r} ({kind}) needs a judge model and none was given")
        model = context.judge_model or grader.model
        if kind == "score_model":
            results = score_model(grader, context.judge, model, samples, items)
            scores = [s for s, _ in results]
            return Graded(grader.name, scores, _threshold(grader, scores), [e for _, e in results])
        labels = label_model(grader, context.judge, model, samples, items)
        passed = [label in grader.passing_labels if label is not None else False for label, _ in labels]
        details = [{"label": label} for label, _ in labels]
        return Graded(grader.name, [float(p) for p in passed], list(passed), [e for _, e in labels], details)
    if kind == "multi":
        return _multi(grader, samples, items, context)
    raise ValueError(f"grader type {kind!r} is not known")


def grade_all(
    graders: Sequence[Any], samples: Sequence[dict[str, Any]], items: Sequence[dict[str, Any]], context: GradingContext
) -> dict[str, Graded]:
    """Every grader over the same samples, by grader name."""
    return {g.name: grade(g, samples, items, context) for g in graders}


def _multi(grader: Any, samples: Any, items: Any, context: GradingContext) -> Graded:
    parts = {name: grade(sub, samples, items, context) for name, sub in grader.graders.items()}
    formula = parse_formula(grader.calculate_output)
    scores: list[float] = []
    errors: list[str | None] = []
    details: list[dict[str, Any]] = []
    for i in range(len(samples)):
        values = {name: part.scores[i] for name, part in parts.items()}
        failed = [f"{name}: {part.errors[i]}" for name, part in parts.items() if part.errors[i]]
        try:
            scores.append(formula(values))
            errors.append("; ".join(failed) or None)
        except FormulaError as exc:
            scores.append(0.0)
            errors.append(str(exc))
        details.append(values)
    return Graded(grader.name, scores, _threshold(grader, scores), errors, details)


def _render_pairs(grader: Any, samples: Any, items: Any) -> tuple[list[str], list[str], list[str | None]]:
    texts, references, errors = [], [], []
    for sample, item in zip(samples, items, strict=True):
        try:
            pair, error = (render(grader.input, sample, item), render(grader.reference, sample, item)), None
        except TemplateError as exc:
            pair, error = ("", ""), str(exc)
        texts.append(pair[0])
        references.append(pair[1])
        errors.append(error)
    return texts, references, errors


def _threshold(grader: Any, scores: list[float]) -> list[bool | None]:
    threshold = getattr(grader, "pass_threshold", None)
    return [None if threshold is None else s >= threshold for s in scores]
