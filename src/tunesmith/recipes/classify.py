"""Sequence classification with a task head: an encoder (BERT family) or a decoder LLM with a fresh linear head.

``AutoModelForSequenceClassification`` gives the head: encoders classify from their first ([CLS]) token, decoders
from their last non-padding token (so the model config's ``pad_token_id`` must be set, and batches are padded on
the left, which also keeps the last position real when peft prepends virtual tokens). The loss is cross-entropy
summed over examples; the engine divides by the number of examples in the accumulation window.

``task.classify.head: generation`` is the other variant (``classify_generation``): a chat model answers with the
label word. ``recipe(cfg)`` picks the variant; both share the metrics, baselines and error analysis of
``recipes/common/labels.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from tunesmith.core.config import RunConfig
from tunesmith.core.errors import ConfigError
from tunesmith.core.progress import track
from tunesmith.data.records import Labeled
from tunesmith.models.resolve import ResolvedModel
from tunesmith.recipes.common.labels import (
    LABEL_ENSEMBLE,
    baselines,
    convert,
    details,
    prediction,
    row_correct,
    score_records,
)
from tunesmith.recipes.contract import (
    Batch,
    EngineTraining,
    Recipe,
    TaskEvaluation,
    TaskFns,
)

# ------------------------------------------------------------ records and labels


def label_set(cfg: RunConfig) -> list[str]:
    """The classes in head order: the configured label words, else the prepared training split's labels, sorted.

    The same rule as ``Run.labels()``; read here because the engine's batches need class indices before the run
    hands the recipe a model.
    """
    if cfg.data.labels:
        return cfg.data.labels
    from tunesmith.core.fs import read_jsonl
    from tunesmith.core.rundir import RunDir

    path = RunDir(cfg.run_dir).split("train")
    task = cfg.data.name  # in a multi-task mix, only this task's rows
    rows = read_jsonl(path) if path.is_file() else []
    labels = sorted({row["label"] for row in rows if "label" in row and row["meta"].get("task", task) == task})
    if len(labels) < 2:
        raise ConfigError(f"classify needs at least two classes in the training data; found {labels or 'none'}")
    return labels


# ------------------------------------------------------------ model


def load_model(
    cfg: RunConfig, resolved: ResolvedModel | None = None, quantization: Any | None = None, labels: Any = None
) -> Any:
    """The pretrained body with a fresh classification head over ``labels`` (seeded by training.seed)."""
    from transformers import AutoModelForSequenceClassification

    from tunesmith.models.load import load_pretrained, load_tokenizer
    from tunesmith.models.resolve import resolve_model

    labels = list(labels or label_set(cfg))
    resolved = resolved or resolve_model(cfg.model.name)
    torch.manual_seed(cfg.training.seed)  # the head's initialisation is part of the seeded run
    model = load_pretrained(
        cfg.model,
        AutoModelForSequenceClassification,
        resolved,
        quantization,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    if model.config.pad_token_id is None:
        # Decoder heads classify from the last token that is not padding, found by the pad id.
        model.config.pad_token_id = load_tokenizer(cfg.model, resolved).pad_token_id
    return model


def auto_class() -> type:
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification


def model_labels(model: Any) -> list[str]:
    id2label = model.config.id2label
    return [id2label[i] for i in range(len(id2label))]


# ------------------------------------------------------------ training


@dataclass
class Example:
    input_ids: list[int]
    token_type_ids: list[int] | None
    label: str
    truncated: bool
    n_targets: int = 1


def encode_row(record: Labeled, tokenizer: Any, cfg: RunConfig) -> Example:
    input_ids, token_type_ids, truncated = encode_text(
        tokenizer, record.text, record.text_pair, cfg.training.max_seq_len
    )
    return Example(input_ids, token_type_ids, record.label, truncated)


def encode_text(tokenizer: Any, text: str, text_pair: str | None, max_len: int) -> tuple[list[int], Any, bool]:
    """Token ids (with the tokenizer's special tokens; pairs joined its way) and token types, cut to ``max_len``."""
    full = tokenizer(text, text_pair)
    truncated = len(full["input_ids"]) > max_len
    encoded = tokenizer(text, text_pair, truncation=True, max_length=max_len) if truncated else full
    return list(encoded["input_ids"]), encoded.get("token_type_ids"), truncated


def pads_left(tokenizer: Any) -> bool:
    """Encoders pool their first ([CLS]) token and are padded on the right; decoders pool the last one."""
    return getattr(tokenizer, "cls_token", None) is None


def collate_inputs(
    ids: Sequence[list[int]], types: Sequence[list[int] | None], pad_id: int, left: bool
) -> dict[str, torch.Tensor]:
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(ids), width), dtype=torch.long)
    token_type_ids = torch.zeros((len(ids), width), dtype=torch.long)
    for row, (x, t) in enumerate(zip(ids, types, strict=True)):
        span = slice(width - len(x), width) if left else slice(0, len(x))
        input_ids[row, span] = torch.tensor(x)
        attention_mask[row, span] = 1
        if t is not None:
            token_type_ids[row, span] = torch.tensor(t)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if any(t is not None for t in types):
        batch["token_type_ids"] = token_type_ids
    return batch


def train_fns(tokenizer: Any, cfg: RunConfig, pack_len: int | None = None) -> TaskFns:
    index = {label: i for i, label in enumerate(label_set(cfg))}
    left, pad_id = pads_left(tokenizer), tokenizer.pad_token_id
    smoothing = cfg.training.label_smoothing

    def collate(examples: Sequence[Example]) -> Batch:
        batch = collate_inputs([e.input_ids for e in examples], [e.token_type_ids for e in examples], pad_id, left)
        batch["labels"] = torch.tensor([index[e.label] for e in examples], dtype=torch.long)
        return batch

    def loss(model: Any, batch: Batch) -> tuple[torch.Tensor, int]:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = model(**inputs).logits.float()
        return F.cross_entropy(logits, batch["labels"], reduction="sum", label_smoothing=smoothing), len(logits)

    return TaskFns(collate, lambda batch: int(batch["labels"].numel()), loss)


# ------------------------------------------------------------ prediction


@torch.no_grad()
def class_probabilities(
    model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str | None]], max_len: int, batch_size: int, desc: str
) -> list[list[float]]:
    """Softmax over the head's classes for each (text, text_pair), batched by similar length."""
    model.eval()
    device = next(model.parameters()).device
    encoded = [encode_text(tokenizer, text, pair, max_len) for text, pair in pairs]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    probs: list[list[float]] = [[] for _ in encoded]
    left = pads_left(tokenizer)
    for start in track(list(range(0, len(order), batch_size)), desc):
        rows = order[start : start + batch_size]
        batch = collate_inputs(
            [encoded[i][0] for i in rows], [encoded[i][1] for i in rows], tokenizer.pad_token_id, left
        )
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float()
        for i, p in zip(rows, logits.softmax(-1).tolist(), strict=True):
            probs[i] = p
    return probs


def predict_records(
    model: Any, tokenizer: Any, records: Sequence[Labeled], cfg: RunConfig, description: str
) -> list[dict[str, Any]]:
    labels = model_labels(model)
    pairs = [(r.text, r.text_pair) for r in records]
    probs = class_probabilities(model, tokenizer, pairs, cfg.training.max_seq_len, cfg.eval.batch_size, description)
    return [prediction(labels, p) for p in probs]


def predict_texts(model: Any, tokenizer: Any, texts: Sequence[str], cfg: RunConfig) -> list[dict[str, Any]]:
    """Predictions for raw input texts (``tunesmith predict``, ``/v1/classify``)."""
    records = [Labeled(text, "") for text in texts]
    return predict_records(model, tokenizer, records, cfg, "predict")


# fmt: off
RECIPE = Recipe(
    name="classify", accepts=(Labeled,), peft_task_type="SEQ_CLS", packs=False,
    # prune measures decoder layers of a causal LM on calibration text; a classifier is tuned by the others.
    methods=("full", "freeze", "lora", "qlora", "prefix", "prompt", "ia3", "adapter"),
    convert=convert, load_model=load_model, auto_class=auto_class, training=EngineTraining(encode_row, train_fns),
    evaluation=TaskEvaluation(
        predict_records, score_records,
        base_is_meaningful=False,  # a freshly initialised head predicts at random: compare with the majority class
        row_correct=row_correct, baselines=baselines, details=details,
        ensemble=LABEL_ENSEMBLE,
    ),
    predict_texts=predict_texts, annotator="classifier",
)
# fmt: on


def recipe(cfg: RunConfig) -> Recipe:
    """The task-head recipe, or ``classify_generation``'s for ``task.classify.head: generation``."""
    classify = cfg.task.classify
    if classify.label_separator is not None and cfg.data.label_names:
        raise ConfigError(
            "task.classify.label_separator and data.label_names are both set; label_names already names each "
            "label value's class.\n  fix: map the fine labels to classes in data.label_names, or drop one of them"
        )
    if classify.head == "generation":
        from tunesmith.recipes import classify_generation

        if not cfg.data.label_names:
            raise ConfigError(
                "task.classify.head is 'generation' but data.label_names is not set; the model answers with "
                "label words.\n  fix: name a word for each label value, e.g. data.label_names: {0: negative, "
                "1: positive}"
            )
        return classify_generation.RECIPE
    return RECIPE
