"""Multi-task learning with one shared backbone and a head per task (e.g. classification + NER on one encoder).

Each task keeps its own recipe (encode, collate, loss, predict); this module composes them. The model is one
Hugging Face task model per task whose backbones are the same module (``base_model_prefix``: ``bert``,
``model``, ...), so a step that trains on a batch of one task updates the backbone every task shares. A
micro-batch may hold rows of several tasks: each task's rows are collated by its recipe and its loss is summed
with the others.

Tasks count targets in different units (a tag per token, a class per sentence), so summing raw target losses
would let the task with more targets per row dominate. Each task's summed loss is divided by its mean number of
targets per example (a constant measured on the encoded data), and the step's targets are its examples: every
example weighs about the same whatever its task, so the data mix's weights decide the balance. Both are sums of
per-row terms, so the loss stays independent of how a step is split into micro-batches.

Saved as one Hugging Face folder per task (``model/<task>/``): each loads on its own with plain transformers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tunesmith.core.config import RunConfig
from tunesmith.core.errors import ConfigError
from tunesmith.recipes.contract import Batch, ChatEvaluation, EngineTraining, Recipe, TaskFns

NAME = "multihead"
METHODS = ("full",)


@dataclass
class TaskExample:
    """One task's encoded example, tagged with its task."""

    task: str
    example: Any

    @property
    def input_ids(self) -> Any:
        return self.example.input_ids

    @property
    def n_targets(self) -> int:
        return self.example.n_targets

    @property
    def truncated(self) -> bool:
        return self.example.truncated


class MultiHeadModel(torch.nn.Module):
    """Task models sharing one backbone; ``heads[task]`` is a complete Hugging Face model."""

    def __init__(self, heads: dict[str, Any]) -> None:
        super().__init__()
        first = next(iter(heads.values()))
        prefix = first.base_model_prefix
        for name, model in heads.items():
            if model.base_model_prefix != prefix:
                raise ConfigError(f"multi-task head '{name}' has a different backbone ({model.base_model_prefix})")
            setattr(model, prefix, getattr(first, prefix))
        self.heads = torch.nn.ModuleDict(heads)
        self.config = first.config  # what the engine reads of a model (attention implementation, dropout)

    def save_pretrained(self, folder: str | Path, **kwargs: Any) -> None:
        for name, model in self.heads.items():
            model.save_pretrained(Path(folder) / name, **kwargs)


def multihead_recipe(tasks: dict[str, tuple[Recipe, RunConfig]], labels: Callable[[str], list[str] | None]) -> Recipe:
    """The recipe of a multi-task run whose tasks have their own heads: ``tasks`` maps a task name to (its recipe,
    its config); ``labels(task)`` is that task's label set. Each task is evaluated by its own recipe."""
    for name, (recipe, _) in tasks.items():
        generative = recipe.peft_task_type == "CAUSAL_LM" or isinstance(recipe.evaluation, ChatEvaluation)
        if generative or not isinstance(recipe.training, EngineTraining):
            raise ConfigError(
                f"data.mix task '{name}' ({recipe.name}) has no task head; a shared backbone with a head per task "
                "takes head tasks (classify, tag, qa).\n  fix: give every dataset the same generative task "
                "(text-to-text multi-task) instead"
            )
    heads = MultiHead(tasks, labels)
    main = next(iter(tasks.values()))[0]
    return Recipe(
        name=NAME,
        accepts=main.accepts,
        peft_task_type=None,
        packs=False,
        methods=METHODS,
        convert=heads.convert,
        load_model=heads.load_model,
        auto_class=heads.auto_class,
        training=EngineTraining(heads.encode_row, heads.train_fns),
        evaluation=main.evaluation,  # not used: the pipeline evaluates each task with its own recipe
    )


class MultiHead:
    """One backbone, a head per task: the tasks' recipes composed (see the module docstring)."""

    def __init__(self, tasks: dict[str, tuple[Recipe, RunConfig]], labels: Callable[[str], list[str] | None]) -> None:
        self.tasks = tasks
        self.task_labels = labels
        self.encoded: dict[str, list[int]] = {name: [0, 0] for name in tasks}  # task -> [examples, targets]

    def convert(self, record: Any, cfg: RunConfig) -> Any:
        recipe, task_cfg = next(iter(self.tasks.values()))
        return recipe.convert(record, task_cfg)

    def load_model(self, cfg: RunConfig, resolved: Any = None, quantization: Any = None, labels: Any = None) -> Any:
        heads = {
            name: recipe.load_model(task_cfg, resolved, quantization, self.task_labels(name))
            for name, (recipe, task_cfg) in self.tasks.items()
        }
        return MultiHeadModel(heads)

    def auto_class(self) -> type:
        raise ConfigError("a multi-head model loads one folder per task; open a task's run instead")

    def encode_row(self, record: Any, tokenizer: Any, cfg: RunConfig) -> TaskExample:
        task = record.meta["task"]
        recipe, task_cfg = self.tasks[task]
        example = _engine(recipe).encode_row(record, tokenizer, task_cfg)
        if example.n_targets:
            self.encoded[task][0] += 1
            self.encoded[task][1] += example.n_targets
        return TaskExample(task, example)

    def targets_per_example(self, task: str) -> float:
        examples, targets = self.encoded[task]
        return targets / examples if examples else 1.0

    def train_fns(self, tokenizer: Any, cfg: RunConfig, pack_len: int | None = None) -> TaskFns:
        fns = {
            name: _engine(recipe).train_fns(tokenizer, task_cfg, None)
            for name, (recipe, task_cfg) in self.tasks.items()
        }

        def collate(examples: Sequence[TaskExample]) -> Batch:
            by_task: dict[str, list[Any]] = defaultdict(list)
            for item in examples:
                by_task[item.task].append(item.example)
            batch = {}
            for task, rows in by_task.items():
                batch |= {f"{task}/{key}": value for key, value in fns[task].collate(rows).items()}
                batch[f"{task}/{EXAMPLES}"] = torch.tensor(len(rows))
            return batch

        def count_targets(batch: Batch) -> int:
            return sum(int(part.pop(EXAMPLES)) for part in split_batch(batch).values())

        def loss(model: Any, batch: Batch) -> tuple[torch.Tensor, int]:
            total, count = None, 0
            for task, part in split_batch(batch).items():
                count += int(part.pop(EXAMPLES))
                task_loss, _ = fns[task].loss(model.heads[task], part)
                task_loss = task_loss / self.targets_per_example(task)
                total = task_loss if total is None else total + task_loss
            return total, count

        return TaskFns(collate, count_targets, loss)


EXAMPLES = "__examples__"  # a task's number of rows in a collated batch


def split_batch(batch: Batch) -> dict[str, Batch]:
    """``{"task/key": tensor}`` back into one batch per task."""
    parts: dict[str, Batch] = defaultdict(dict)
    for flat_key, value in batch.items():
        task, key = flat_key.split("/", 1)
        parts[task][key] = value
    return dict(parts)


def _engine(recipe: Recipe) -> EngineTraining:
    assert isinstance(recipe.training, EngineTraining)  # checked in multihead_recipe
    return recipe.training
