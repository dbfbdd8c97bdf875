"""Task recipes: one module per task behind one contract (``recipes/contract.py``).

``RECIPES`` is the one table of tasks: ``task.name`` -> the module whose ``recipe(config) -> Recipe`` describes it.
Every other list of tasks (chat policies, annotators, stages that hand a model on, the config's task names) is
derived from the ``Recipe`` values or checked against this table by the tests. Adding a task is adding a module
(and its config section); see docs/architecture.md.
"""

from __future__ import annotations

import importlib

from tunesmith.core.config import RunConfig
from tunesmith.core.errors import ConfigError
from tunesmith.recipes.contract import Recipe

# task.name -> module under tunesmith.recipes. Several task names may share one module (dpo/orpo/simpo/kto).
RECIPES: dict[str, str] = {
    "sft": "sft",
    "classify": "classify",
    "tag": "tag",
    "seq2seq": "seq2seq",
    "qa": "qa",
    "lm": "lm",
    "dpo": "preference",
    "orpo": "preference",
    "simpo": "preference",
    "kto": "preference",
    "reward": "reward",
    "ppo": "ppo",
    "grpo": "grpo",
}


def get_recipe(name: str, config: RunConfig) -> Recipe:
    """The recipe for ``task.name`` as ``config`` sets it up (e.g. classify with a head or as generation)."""
    module = RECIPES.get(name)
    if module is None:
        raise ConfigError(f"task.name: unknown recipe {name!r}; available: {', '.join(RECIPES)}")
    return importlib.import_module(f"tunesmith.recipes.{module}").recipe(config)


def task_recipes() -> dict[str, Recipe]:
    """Every task's recipe with its defaults (``task.name`` -> Recipe), for lists derived from the table."""
    return {name: importlib.import_module(f"tunesmith.recipes.{module}").RECIPE for name, module in RECIPES.items()}
