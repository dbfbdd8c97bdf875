"""Rows from more than one source: the datasets of a multi-task mix, and replay of earlier stages' training rows."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from tunesmith.core.console import console
from tunesmith.core.errors import TunesmithError
from tunesmith.core.fs import read_jsonl
from tunesmith.data.mix import mix_rows
from tunesmith.data.prepare import prepare_data
from tunesmith.data.records import Record, record_from_dict
from tunesmith.data.tokens import TokenCounter
from tunesmith.pipeline.trained import TrainedRun


def mix_tasks(run: TrainedRun, main: Any, tokens: TokenCounter) -> Any:
    """Prepare every other dataset of the mix like the first, then mix the training rows by weight.

    Validation rows of all tasks are pooled (one validation loss); each other task's test rows are kept as
    ``test-<task>.jsonl`` for its own evaluation. Every row carries its task in ``meta.task``.
    """
    cfg = run.config
    per_task = {cfg.data.name: main}
    for name, task_config in list(run.task_configs().items())[1:]:
        per_task[name] = prepare_data(
            task_config.data,
            task_config.task,
            cfg.training.seed,
            convert=lambda record, c=task_config, r=run.task_recipe(name): r.convert(record, c),
            accepts=run.task_recipe(name).accepts,
            tokens=tokens,
        )
    for name, prepared in per_task.items():
        for records in prepared.splits.values():
            for record in records:
                record.meta = {**record.meta, "task": name}
    weights = {name: c.data.weight for name, c in run.task_configs().items()}
    train = mix_rows({name: p.splits["train"] for name, p in per_task.items()}, weights, cfg.training.seed)
    splits = {"train": train}
    validation = [r for p in per_task.values() for r in p.splits.get("validation", [])]
    if validation:
        splits["validation"] = validation
    if "test" in main.splits:
        splits["test"] = main.splits["test"]
    for name, prepared in list(per_task.items())[1:]:
        if "test" in prepared.splits:
            splits[f"test-{name}"] = prepared.splits["test"]
    summary = {
        **main.report(),
        "rows": {name: len(rows) for name, rows in splits.items()},
        "mix": {name: sum(1 for r in train if r.meta["task"] == name) for name in per_task},
        "tasks": {name: p.report() for name, p in list(per_task.items())[1:]},
    }
    console.print(f"  multi-task mix of training rows: {summary['mix']}")
    return type(main)(splits, [r for p in per_task.values() for r in p.rejects], summary)


def replay_rows(run: TrainedRun, sources: list[Path], fraction: float, n_train: int) -> list[Record]:
    """Earlier stages' training rows, converted for this task: ``fraction`` of the mixed training split."""
    pool: list[Record] = []
    for path in sources:
        for row in read_jsonl(path):
            record = record_from_dict(row)
            if not isinstance(record, run.recipe.accepts):
                raise TunesmithError(
                    f"{path}: replay needs earlier training rows the '{run.config.task.name}' task can train on, "
                    f"but they are {type(record).__name__} records.\n  fix: set replay: 0 for this stage"
                )
            record = run.convert(record)
            record.meta = {**record.meta, "replay": path.parent.parent.name}
            pool.append(record)
    wanted = round(fraction * n_train / (1 - fraction))
    return random.Random(run.config.training.seed).sample(pool, min(wanted, len(pool)))
