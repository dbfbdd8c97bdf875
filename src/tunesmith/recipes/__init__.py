"""Task recipes: one module per task, beside ``sft``. Adding a task is adding a module, not editing the engine.

The contract every recipe module fulfils (the run pipeline calls only these names):

``NAME: str``
    The ``task.name`` it answers to.
``ACCEPTS: tuple[type, ...]``
    Record types (``tunesmith.data.records``) the recipe can train on after ``convert``; data that loads as any
    other type is rejected before preparation with a message naming the file and what the task needs.
``PEFT_TASK_TYPE: str``
    peft's task type for adapter methods (``CAUSAL_LM``, ``SEQ_CLS``, ``TOKEN_CLS``, ``SEQ_2_SEQ_LM``,
    ``QUESTION_ANS``); it decides which head peft keeps trainable and saves with the adapter.
``PACKS: bool``
    Whether its examples can be packed into rows (causal LM only).
``METHODS: tuple[str, ...] | None``
    Methods (``method.name``) that make sense for the task; None means all. Others are rejected at config time.
``convert(record, cfg) -> Record``
    The record as the recipe trains on it (raise ``RowError`` to reject one row, which is counted).
``load_model(cfg, resolved=None, quantization=None, labels=None) -> model``
    The base model with the task's head (fp32); ``labels`` are the label set for classification heads.
``encode_row(record, tokenizer, cfg) -> example``
    One training example; it has ``input_ids``, ``n_targets`` (0 drops it, counted) and ``truncated``.
``train_fns(tokenizer, cfg, pack_len) -> TaskFns``
    ``collate`` / ``count_targets`` / ``loss`` for the engine (``pack_len`` set when packing).
``auto_class() -> type``
    The transformers ``AutoModelFor...`` class that loads a fully fine-tuned model of this task.

Evaluation: ``sft`` (and any recipe with ``GENERATIVE = True``) is evaluated by ``tunesmith.evaluation`` with
chat replies. Other recipes provide, for ``tunesmith.task_evaluation``:

``predict_records(model, tokenizer, records, cfg, description) -> list[dict]``
    One JSON-ready prediction per record (at least ``{"prediction": ...}``).
``score_records(predictions, records, cfg) -> dict[str, float]``
    The task's metrics over paired predictions and records.
``row_correct(prediction, record) -> bool``
    Optional: per-row correctness (McNemar's test); tasks without it get the paired bootstrap only.
``BASE_IS_MEANINGFUL: bool``
    False where the untrained model cannot answer (a freshly initialised head): no base-model comparison then.
``baselines(train_records, records, cfg) -> dict[str, list[dict]]``
    Optional: predictions of simple baselines (e.g. majority class), scored like the model.
``details(predictions, records, cfg) -> dict``
    Optional: per-class metrics, confusion matrix, error analysis.
``describe(record) -> dict``
    Optional: ``{"input": ..., "reference": ...}`` texts of a test row for ``predictions.jsonl`` and the report's
    sample table (a prediction may carry a readable ``display`` string for the same table).
``labels(train_records) -> list[str] | None``
    Optional: the label set from the training records, when it is not one label per row (``tag``: every tag
    seen); ``Run.labels()`` uses it in place of the records' ``stratum``.

Optional hooks, for tasks that do not fit the fixed-dataset loop or the generic evaluation:

``train(run, resume=False) -> model``
    When present, ``Run.train`` calls it instead of the engine's loop (ppo and grpo sample rollouts from the policy
    as they train). It must do what the standard path does: apply the method, write ``metrics.jsonl``, save the
    model to ``run.dir.model`` and mark the ``train`` stage done; engine pieces (``build_optimizer``,
    ``build_scheduler``, ``make_accelerator``, ``save_model``) keep it consistent with other tasks. ``Run.train``
    has already refused a run with unfinished checkpoints and no ``--resume``; with ``resume`` the hook continues
    from its newest checkpoint.
``evaluate_run(run, split="test", chats=None, out_dir=None) -> dict``
    When present, the evaluate stage calls it instead of ``tunesmith.task_evaluation`` (preference and RL tasks
    measure reward accuracy, KL from the reference and win rate); it writes ``eval/metrics.json`` as
    ``{"base": {...}, "tuned": {...}}`` and marks ``evaluate`` done when writing to ``run.dir.eval``.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from tunesmith.errors import ConfigError

# task.name -> module under tunesmith.recipes. Several task names may share one module (dpo/ipo/orpo/simpo/kto).
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


def get_recipe(name: str, config: Any = None) -> ModuleType:
    """The recipe module for ``task.name``.

    A recipe whose variants differ in the contract's constants (classify with a task head vs as generation) has
    ``variant(config) -> module``; with ``config`` given, the module for that configuration is returned.
    """
    module = RECIPES.get(name)
    if module is None:
        raise ConfigError(f"task.name: unknown recipe {name!r}; available: {', '.join(RECIPES)}")
    try:
        recipe = importlib.import_module(f"tunesmith.recipes.{module}")
    except ModuleNotFoundError as exc:
        if exc.name != f"tunesmith.recipes.{module}":
            raise
        raise ConfigError(f"task.name: the {name!r} recipe is not available in this version of tunesmith") from None
    if config is not None and hasattr(recipe, "variant"):
        return recipe.variant(config)
    return recipe
