"""Which evaluation a run gets (chat replies, the task's own predictions, or the recipe's own evaluation), computed
in the run's precision: bf16 autocast where training would use it (engine/precision.py), fp32 elsewhere."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from tunesmith.engine.precision import choose_precision, computing_in
from tunesmith.pipeline.trained import TrainedRun
from tunesmith.recipes.contract import ChatEvaluation, OwnEvaluation, TaskEvaluation

# (run, split="test", chats=None, out_dir=None) -> {"base": {...}, "tuned": {...}}
Evaluator = Callable[..., dict[str, Any]]


def evaluator(run: TrainedRun) -> Evaluator:
    """The evaluation the run's recipe declares, in the run's precision."""
    evaluate = _declared(run)
    precision = choose_precision(run.config.training.precision)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    def in_precision(*args: Any, **kwargs: Any) -> dict[str, Any]:
        with computing_in(precision, device):
            return evaluate(*args, **kwargs)

    return in_precision


def _declared(run: TrainedRun) -> Evaluator:
    evaluation = run.recipe.evaluation
    if isinstance(evaluation, ChatEvaluation):
        from tunesmith.pipeline.evaluation import evaluate_run

        return evaluate_run
    if isinstance(evaluation, TaskEvaluation):
        from tunesmith.pipeline.task_evaluation import evaluate_task_run

        return evaluate_task_run
    assert isinstance(evaluation, OwnEvaluation)
    return evaluation.evaluate_run
