"""One task table: every list of tasks agrees with the recipe registry, and every training setting is honoured or
refused by every recipe (no silently ignored keys)."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest

from tunesmith.core.config import TASK_SECTIONS, TaskName, TrainingConfig, validate_config
from tunesmith.core.errors import ConfigError
from tunesmith.pipeline.trained import TrainedRun, unsupported_training_options
from tunesmith.recipes import RECIPES, get_recipe, task_recipes
from tunesmith.recipes.contract import ChatEvaluation, EngineTraining, OwnEvaluation, OwnLoop, Recipe

# A value away from the default for every training setting (each valid on its own).
NON_DEFAULT: dict[str, Any] = {
    "epochs": 2.0, "max_steps": 5, "batch_size": 3, "grad_accum": 2, "learning_rate": 1e-3, "weight_decay": 0.1,
    "warmup_ratio": 0.2, "scheduler": "cosine", "plateau_factor": 0.3, "plateau_patience": 5, "decay_ratio": 0.3,
    "label_smoothing": 0.1, "gradient_checkpointing": True, "neftune_alpha": 5.0, "early_stopping_patience": 2,
    "max_grad_norm": 0.5, "max_seq_len": 1024, "packing": False, "eval_every": 10, "log_every": 2, "save_every": 10,
    "keep_checkpoints": 3, "max_bad_steps": 3, "seed": 7, "precision": "fp32", "micro_batch_size": 2,
    "dropout": 0.2, "compile": True, "attention": "eager", "liger": False, "trackers": [],
}  # fmt: skip


def _config(task: str, tmp_path: Path, **training: Any) -> Any:
    raw: dict[str, Any] = {
        "model": {"name": "smollm2-135m"},
        "task": {"name": task},
        "data": {"train": str(tmp_path / "train.jsonl"), "validation_fraction": 0.1},
        "training": training,
        "eval": {"enabled": False},
        "output": {"dir": str(tmp_path / "runs")},
    }
    if task == "classify":
        raw["data"]["label_names"] = {0: "negative", 1: "positive"}
    if task in ("ppo", "grpo"):
        raw["task"]["rl"] = {"reward": ["exact_match"]}
    return validate_config(raw)


def test_the_config_names_exactly_the_registered_tasks() -> None:
    assert set(typing.get_args(TaskName)) == set(RECIPES)
    for section, tasks in TASK_SECTIONS.items():
        assert set(tasks) <= set(RECIPES), section


@pytest.mark.parametrize("task", list(RECIPES))
def test_each_task_resolves_to_a_recipe_of_its_own_name(task: str, tmp_path: Path) -> None:
    recipe = get_recipe(task, _config(task, tmp_path))
    assert isinstance(recipe, Recipe) and recipe.name == task
    assert isinstance(recipe.training, EngineTraining | OwnLoop)
    # chat evaluation is for chat models; an own loop needs its own evaluation (no fixed-dataset predictions)
    assert not isinstance(recipe.evaluation, ChatEvaluation) or recipe.peft_task_type == "CAUSAL_LM"
    assert not isinstance(recipe.training, OwnLoop) or isinstance(recipe.evaluation, OwnEvaluation)


def test_the_lists_derived_from_the_recipes_are_the_tasks_they_always_were() -> None:
    recipes = task_recipes()
    chat = {name for name, r in recipes.items() if r.chat_replies is not None}
    assert chat == {"sft", "dpo", "orpo", "simpo", "kto", "ppo", "grpo"}
    assert {name for name, r in recipes.items() if r.annotator is not None} == {"sft", "classify"}
    assert {name for name, r in recipes.items() if r.hands_on_model} == {"sft", "lm"}
    assert {name for name, r in recipes.items() if r.predicts_targets} == {"seq2seq"}
    assert {name for name, r in recipes.items() if isinstance(r.training, OwnLoop)} == {"ppo", "grpo"}


@pytest.mark.parametrize("task", list(RECIPES))
@pytest.mark.parametrize("key", list(TrainingConfig.model_fields))
def test_every_training_setting_is_honoured_or_refused(task: str, key: str, tmp_path: Path) -> None:
    assert set(NON_DEFAULT) == set(TrainingConfig.model_fields), "give the new setting a non-default value here"
    settings = {key: NON_DEFAULT[key]}
    if key == "early_stopping_patience":  # it watches validation loss, which eval_every turns on
        settings["eval_every"] = NON_DEFAULT["eval_every"]
    config = _config(task, tmp_path, **settings)
    recipe = get_recipe(task, config)
    if key in recipe.training_options:
        TrainedRun(config)  # accepted
        assert unsupported_training_options(recipe, config.training) == []
    else:
        with pytest.raises(ConfigError, match=rf"training\.{key}\b.*: the '{task}' task trains with its own loop"):
            TrainedRun(config)


def test_an_own_loop_refuses_the_settings_it_would_ignore(tmp_path: Path) -> None:
    config = _config("ppo", tmp_path, grad_accum=4, trackers=[], learning_rate=1e-3)
    with pytest.raises(ConfigError) as error:
        TrainedRun(config)
    message = str(error.value)
    assert "training.grad_accum, training.trackers" in message and "learning_rate" not in message.split("fix:")[0]
    assert "fix: remove them from the config" in message
