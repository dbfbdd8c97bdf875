"""The read side of a run: its config, directory, recipe and models, for evaluating, shipping and continuing it.

``Run`` (pipeline/run.py) adds the stages that write; evaluation, export, predict, serve and continual learning read
through this class only, so they never depend on how a run is trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tunesmith.core.config import RunConfig, TrainingConfig, validate_config
from tunesmith.core.errors import ConfigError, TunesmithError
from tunesmith.core.fs import read_jsonl
from tunesmith.core.logs import attach as attach_logs
from tunesmith.core.rundir import RunDir
from tunesmith.data.records import Record, record_from_dict, stratum
from tunesmith.data.render import ensure_chat_template
from tunesmith.models.adapt import load_trained, needs_base
from tunesmith.models.load import load_tokenizer
from tunesmith.models.resolve import ResolvedModel
from tunesmith.recipes import get_recipe
from tunesmith.recipes.contract import Recipe


class TrainedRun:
    """A run directory and the config that made it, with its task's recipe (one recipe per head for multi-head
    runs) and the models: the base it started from and the tuned one."""

    def __init__(self, config: RunConfig, root: Path | None = None) -> None:
        if config.stages:
            raise TunesmithError(
                f"{config.output.name}: this config has stages; run it with `tunesmith run CONFIG` "
                f"(each stage becomes a run in {config.run_dir / 'stages'})"
            )
        self.config = config
        self.dir = RunDir(root if root is not None else config.run_dir)
        self.model_subdir: str | None = None  # a task's folder in a multi-head model (model/<task>/)
        self.recipe: Recipe = get_recipe(config.task.name, config)
        if config.multihead:
            from tunesmith.recipes.multihead import multihead_recipe

            tasks = {name: (self.task_recipe(name), c) for name, c in self.task_configs().items()}
            self.recipe = multihead_recipe(tasks, labels=lambda name: self.task_run(name).labels())
        check_recipe(self.recipe, config)

    @classmethod
    def from_dir(cls, path: str | Path) -> TrainedRun:
        """Open a trained run from its directory (``runs/<name>``), wherever it now lives.

        The resolved ``config.yaml`` is validated as a schema only: data files it names need not exist any more.
        """
        root = Path(path)
        config_path = root / "config.yaml"
        if not config_path.is_file():
            raise TunesmithError(
                f"{root}: not a run directory (no config.yaml).\n"
                "  fix: pass a run directory such as runs/<name>, made by `tunesmith run` or `tunesmith train`"
            )
        try:
            raw = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise TunesmithError(f"{config_path}: not valid YAML: {exc}") from None
        run = cls(validate_config(raw if isinstance(raw, dict) else {}, source=str(config_path)), root=root)
        if not run.dir.is_done("train") or not run.dir.model.is_dir():
            raise TunesmithError(
                f"{root}: this run has no trained model yet (state.json does not list 'train').\n"
                "  fix: finish it first with `tunesmith train CONFIG` or `tunesmith run CONFIG`"
            )
        attach_logs(root / "logs")  # eval, export, serve...: library output joins the run's log
        return run

    # ------------------------------------------------------------ tasks of a data mix

    def task_configs(self) -> dict[str, RunConfig]:
        """Each dataset of a multi-task mix as a config of its own, by task name (this config's data first)."""
        cfg = self.config
        configs = {cfg.data.name: cfg}
        for entry in cfg.data.mix:
            task = (entry.task or cfg.task).model_copy(
                update={"system_prompt": entry.system_prompt or cfg.task.system_prompt}
            )
            configs[entry.name] = cfg.model_copy(update={"data": entry, "task": task})
        return configs

    def task_recipe(self, name: str) -> Recipe:
        """The recipe of one task of a data mix (every task's own in a multi-head run)."""
        config = self.task_configs()[name]
        return get_recipe(config.task.name, config) if self.config.multihead else self.recipe

    def task_run(self, name: str) -> TrainedRun:
        """One task of a data mix as a run of its own in this run's directory (its model: model/<task>/ when the
        tasks have their own heads)."""
        config = self.task_configs()[name]
        run = TrainedRun(config.model_copy(update={"data": config.data.model_copy(update={"mix": []})}), self.dir.root)
        if self.config.multihead:
            run.model_subdir = name
        return run

    # ------------------------------------------------------------ data and models

    def convert(self, record: Record) -> Record:
        return self.recipe.convert(record, self.config)

    def labels(self) -> list[str] | None:
        """The task's label set: the configured label words, else the labels of the prepared training split
        (sorted, or the recipe's own rule, e.g. every tag seen), else None (tasks without labels)."""
        if self.config.data.labels:
            return self.config.data.labels
        path = self.dir.split("train")
        if not path.is_file():
            return None
        task = self.config.data.name
        rows = (record_from_dict(row) for row in read_jsonl(path))
        records = (r for r in rows if r.meta.get("task", task) == task)  # this task's rows of a multi-task mix
        if self.recipe.labels is not None:
            return self.recipe.labels(records)
        found = {label for record in records if (label := stratum(record)) is not None}
        return sorted(found) or None

    def load_base(self) -> Any:
        """The base model with the task's head (fp32), as training started from it."""
        return self.recipe.load_model(self.config, labels=self.labels())

    def load_tuned(self) -> tuple[Any, Any]:
        """The tuned model (fp32, eval mode; a peft model for peft methods) and its tokenizer."""
        base = self.load_base() if needs_base(self.config.method) else None
        return self.tuned_from_base(base).eval(), self.tuned_tokenizer()

    def tuned_tokenizer(self) -> Any:
        """The tokenizer saved with the trained model, with the chat template it was trained with."""
        tokenizer = load_tokenizer(self.config.model, _saved_tokenizer(self.dir.model))
        if self.recipe.uses_chat_template:
            ensure_chat_template(tokenizer)
        return tokenizer

    def tuned_from_base(self, base_model: Any) -> Any:
        """The tuned model: the adapter attached to ``base_model`` (peft methods and bottleneck adapters, which
        change ``base_model`` in place), or the saved weights (full, freeze, prune), which ignore it."""
        folder = self.dir.model / self.model_subdir if self.model_subdir else self.dir.model
        return load_trained(self.config.method, folder, base_model, self.recipe.auto_class())


def check_recipe(recipe: Recipe, config: RunConfig) -> None:
    """Refuse, before any data or model loads, a method that makes no sense for the task and any training setting
    the task's loop would not honour."""
    allowed = recipe.methods
    if allowed is not None and config.method.name not in allowed:
        why = recipe.method_reasons.get(config.method.name)
        raise ConfigError(
            f"method.name is '{config.method.name}', which the '{config.task.name}' task does not support"
            f"{f': {why}' if why else ''}.\n"
            f"  fix: use one of: {', '.join(allowed)}"
        )
    ignored = unsupported_training_options(recipe, config.training)
    if ignored:
        raise ConfigError(
            f"{', '.join(f'training.{key}' for key in ignored)}: the '{config.task.name}' task trains with its own "
            f"loop, which does not use {'this setting' if len(ignored) == 1 else 'these settings'}.\n"
            f"  fix: remove {'it' if len(ignored) == 1 else 'them'} from the config (it supports: "
            f"{', '.join(sorted(recipe.training_options))})"
        )


def unsupported_training_options(recipe: Recipe, training: TrainingConfig) -> list[str]:
    """The ``training.*`` keys set away from their default that ``recipe`` does not honour."""
    defaults = TrainingConfig()
    return [
        key
        for key in TrainingConfig.model_fields
        if key not in recipe.training_options and getattr(training, key) != getattr(defaults, key)
    ]


def _saved_tokenizer(model_dir: Path) -> ResolvedModel:
    """The tokenizer saved with the trained model (it carries the chat template used in training)."""
    return ResolvedModel(str(model_dir), str(model_dir.resolve()), "local")
