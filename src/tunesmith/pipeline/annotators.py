"""Trained runs as annotators: a run directory given to ``tunesmith data annotate --model`` scores rows with its
own model and prompt format. Whether a task's runs can annotate is the recipe's ``annotator``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunesmith.core.errors import DataError, TunesmithError
from tunesmith.curate.annotate import ClassifierScorer, Scorer, WordScorer, model_scorer
from tunesmith.data.labelfile import Item, LabelFile, LabelSet
from tunesmith.data.records import Message
from tunesmith.pipeline.trained import TrainedRun
from tunesmith.recipes import task_recipes


def load_scorer(model: str, batch_size: int = 8, calibrate: bool = True) -> Scorer:
    """A run directory (a trained run, dispatched on its task) or a generative model name."""
    path = Path(model)
    if path.is_dir() and (path / "config.yaml").is_file():
        return _run_scorer(path, batch_size, calibrate)
    return model_scorer(model, batch_size, calibrate)


def _sft_run(run: Any, batch_size: int, calibrate: bool) -> Scorer:
    """An sft run answers with label words: score them after the prompt exactly as it was trained."""
    from tunesmith.data.convert import to_chat
    from tunesmith.data.records import Labeled

    model, tokenizer = run.load_tuned()
    cfg = run.config

    def prompt(item: Item, data: LabelFile, labels: LabelSet, shots: list[tuple[str, str]]) -> list[Message]:
        if shots:
            raise DataError("--shots applies to a generative model, not to a trained run (it was trained without)")
        if cfg.data.prompt_template:
            try:
                text = cfg.data.prompt_template.format(**item.values)
            except KeyError as exc:
                raise DataError(
                    f"{data.where(item)}: the run's data.prompt_template needs column {exc}, which the row lacks"
                ) from None
            messages = [Message("user", text)]
            if cfg.task.system_prompt:
                messages.insert(0, Message("system", cfg.task.system_prompt))
            return messages
        chat = to_chat(Labeled(data.text(item), "?"), {}, cfg.task.system_prompt)
        return chat.prompt_messages()

    return WordScorer(model, tokenizer, prompt, batch_size, calibrate)


def _classify_run(run: Any, batch_size: int, calibrate: bool) -> Scorer:
    model, tokenizer = run.load_tuned()
    predict = run.recipe.predict_texts
    assert predict is not None  # a recipe whose annotator is "classifier" declares predict_texts
    return ClassifierScorer(lambda texts: predict(model, tokenizer, texts, run.config), str(run.dir.root))


ANNOTATORS: dict[str, Callable[[Any, int, bool], Scorer]] = {"label_words": _sft_run, "classifier": _classify_run}


def _run_scorer(path: Path, batch_size: int, calibrate: bool) -> Scorer:
    run = TrainedRun.from_dir(path)
    kind = run.recipe.annotator
    if kind is None:
        able = [name for name, recipe in task_recipes().items() if recipe.annotator is not None]
        raise TunesmithError(
            f"{path}: a '{run.config.task.name}' run cannot pre-label rows; runs of task {', '.join(able)} can.\n"
            "  fix: pass a generative model (--model smollm2-135m) or a run of a supported task"
        )
    return ANNOTATORS[kind](run, batch_size, calibrate)


def run_label_set(model: str) -> LabelSet:
    """The label set of a trained run (its ``data.label_names``), for ``annotate`` without ``--labels``."""
    path = Path(model)
    if path.is_dir() and (path / "config.yaml").is_file():
        import yaml

        names = (yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")) or {}).get("data", {})
        names = names.get("label_names") or {}
        if len(names) >= 2:
            return LabelSet.parse([f"{k}={v}" for k, v in names.items()])
    raise DataError("--labels is required (e.g. --labels positive,negative or --labels 0=negative,1=positive)")
