"""Which evaluation a run gets: chat replies, the task's own predictions, or the recipe's own evaluation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tunesmith.pipeline.trained import TrainedRun
from tunesmith.recipes.contract import ChatEvaluation, OwnEvaluation, TaskEvaluation

# (run, split="test", chats=None, out_dir=None) -> {"base": {...}, "tuned": {...}}
Evaluator = Callable[..., dict[str, Any]]


def evaluator(run: TrainedRun) -> Evaluator:
    """The evaluation the run's recipe declares."""
    evaluation = run.recipe.evaluation
    if isinstance(evaluation, ChatEvaluation):
        from tunesmith.pipeline.evaluation import evaluate_run

        return evaluate_run
    if isinstance(evaluation, TaskEvaluation):
        from tunesmith.pipeline.task_evaluation import evaluate_task_run

        return evaluate_task_run
    assert isinstance(evaluation, OwnEvaluation)
    return evaluation.evaluate_run
