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
"""

from __future__ import annotations

import importlib
from types import ModuleType

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


def get_recipe(name: str) -> ModuleType:
    """The recipe module for ``task.name``."""
    module = RECIPES.get(name)
    if module is None:
        raise ConfigError(f"task.name: unknown recipe {name!r}; available: {', '.join(RECIPES)}")
    try:
        return importlib.import_module(f"tunesmith.recipes.{module}")
    except ModuleNotFoundError as exc:
        if exc.name != f"tunesmith.recipes.{module}":
            raise
        raise ConfigError(f"task.name: the {name!r} recipe is not available in this version of tunesmith") from None
