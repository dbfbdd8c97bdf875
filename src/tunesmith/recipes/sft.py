"""Supervised fine-tuning of a causal LM on chats: loss on assistant tokens, greedy generation to predict."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from tunesmith.core.config import RunConfig
from tunesmith.core.progress import track
from tunesmith.data.convert import to_chat
from tunesmith.data.records import Chat, Feedback, Labeled, Pair, Preference, Record
from tunesmith.data.render import IGNORE_INDEX, Encoded, encode_chat, render_prompt
from tunesmith.engine.packing import model_inputs, pack
from tunesmith.metrics.classification import classification_details, classification_metrics, probability_metrics
from tunesmith.metrics.generation import generation_metrics
from tunesmith.metrics.text import exact_match, extract_label, token_f1
from tunesmith.models.load import load_causal_lm
from tunesmith.models.resolve import ResolvedModel
from tunesmith.recipes.contract import Batch, ChatEvaluation, EngineTraining, Recipe, TaskFns


def convert(record: Record, cfg: RunConfig) -> Chat:
    """The record as a conversation whose last assistant reply is learned (labels become label words)."""
    return to_chat(record, cfg.data.label_names, cfg.task.system_prompt)


def load_model(
    cfg: RunConfig, resolved: ResolvedModel | None = None, quantization: Any | None = None, labels: Any = None
) -> Any:
    return load_causal_lm(cfg.model, resolved, quantization)


def auto_class() -> type:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM


def encode_row(record: Chat, tokenizer: Any, cfg: RunConfig) -> Encoded:
    return encode(record, tokenizer, cfg.task.train_on, cfg.training.max_seq_len)


def train_fns(tokenizer: Any, cfg: RunConfig, pack_len: int | None = None) -> TaskFns:
    return task_fns(tokenizer, pack_len, cfg.training.label_smoothing)


def encode(chat: Chat, tokenizer: Any, train_on: str, max_len: int) -> Encoded:
    return encode_chat(chat, tokenizer, train_on=train_on, max_len=max_len)


def collate(examples: Sequence[Encoded], pad_id: int) -> Batch:
    """Right-pad to the longest example in the batch (one example per row)."""
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        input_ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def collate_packed(examples: Sequence[Encoded], pad_id: int, row_len: int) -> Batch:
    """Pack the examples into rows of at most ``row_len`` tokens, isolated by a block-diagonal mask."""
    return pack([(e.input_ids, e.labels) for e in examples], row_len, pad_id)


def count_targets(batch: Batch) -> int:
    """Tokens that are predicted and carry a label (labels shift left by one)."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def loss(model: Any, batch: Batch, label_smoothing: float = 0.0) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over target tokens, and their count (logits only where there are targets)."""
    from tunesmith.engine.lm_loss import causal_lm_loss

    return causal_lm_loss(model, model_inputs(model, batch), batch["labels"], label_smoothing)


def task_fns(tokenizer: Any, pack_len: int | None = None, label_smoothing: float = 0.0) -> TaskFns:
    """The engine's view of sft: padded batches, or rows packed up to ``pack_len`` tokens when it is set."""
    pad_id = tokenizer.pad_token_id
    loss_fn = partial(loss, label_smoothing=label_smoothing) if label_smoothing else loss
    if pack_len:
        return TaskFns(lambda examples: collate_packed(examples, pad_id, pack_len), count_targets, loss_fn)
    return TaskFns(lambda examples: collate(examples, pad_id), count_targets, loss_fn)


@dataclass
class Reply:
    text: str
    confidence: float  # probability of the reply's first token: the model's confidence in a one-word answer
    label_probs: list[float] | None = None  # first-token probabilities of each label, renormalised over the labels


def label_token_ids(tokenizer: Any, labels: Sequence[str] | None) -> list[int] | None:
    """First token of each label word, if they are all different (else label probabilities are not defined)."""
    if not labels:
        return None
    ids = [tokenizer.encode(label, add_special_tokens=False)[0] for label in labels]
    return ids if len(set(ids)) == len(ids) else None


@torch.no_grad()
def generate_replies(
    model: Any,
    tokenizer: Any,
    chats: Sequence[Chat],
    max_new_tokens: int,
    batch_size: int,
    description: str = "predict",
    labels: Sequence[str] | None = None,
    sampling: dict[str, Any] | None = None,
) -> list[Reply]:
    """Greedy replies to each chat's prompt (the messages before its final assistant reply); ``sampling`` are
    ``generate()`` options that replace greedy decoding (e.g. ``{"do_sample": True, "temperature": 0.8}``).

    With ``labels``, each reply also carries the model's probability of starting its answer with each label,
    renormalised over the label set: a prediction constrained to the labels, usable for ROC-AUC,
    calibration and probability-averaging ensembles.
    """
    model.eval()
    device = next(model.parameters()).device
    label_ids = label_token_ids(tokenizer, labels)
    prompts = [render_prompt(chat.prompt_messages(), tokenizer, chat.tools) for chat in chats]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths pad less
    replies: list[Reply] = [Reply("", 0.0)] * len(prompts)
    previous_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        starts = list(range(0, len(order), batch_size))
        for start in track(starts, description):
            indices = order[start : start + batch_size]
            encoded = tokenizer(
                [prompts[i] for i in indices], return_tensors="pt", padding=True, add_special_tokens=False
            ).to(device)
            output = model.generate(
                **encoded,
                max_new_tokens=max_new_tokens,
                **(sampling or {"do_sample": False}),
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                output_scores=True,
                return_dict_in_generate=True,
            )
            first_logits = output.scores[0].float()
            first_token_probs = first_logits.softmax(-1).max(-1).values.tolist()
            label_probs = first_logits[:, label_ids].softmax(-1).tolist() if label_ids else [None] * len(indices)
            new_tokens = output.sequences[:, encoded["input_ids"].shape[1] :]
            texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            for i, text, prob, probs in zip(indices, texts, first_token_probs, label_probs, strict=True):
                replies[i] = Reply(text.strip(), prob, probs)
    finally:
        tokenizer.padding_side = previous_side
    return replies


def predict(
    model: Any,
    tokenizer: Any,
    chats: Sequence[Chat],
    max_new_tokens: int,
    batch_size: int,
    description: str = "predict",
    sampling: dict[str, Any] | None = None,
) -> list[str]:
    """Reply texts, greedy unless ``sampling`` is given (see ``generate_replies``)."""
    replies = generate_replies(model, tokenizer, chats, max_new_tokens, batch_size, description, sampling=sampling)
    return [r.text for r in replies]


def score(replies: Sequence[Reply], references: Sequence[str], labels: list[str] | None) -> dict[str, float]:
    """Classification metrics when the answers come from a label set, else exact match, token F1, BLEU, chrF
    and ROUGE-1/2/L (the last five on sacrebleu's 0-100 scale)."""
    texts = [r.text for r in replies]
    if labels:
        metrics = classification_metrics([extract_label(t, labels) for t in texts], references, labels)
        if replies and all(r.label_probs is not None for r in replies):
            metrics |= probability_metrics([r.label_probs for r in replies], references, labels)
        return metrics
    n = max(len(texts), 1)
    return {
        "exact_match": sum(map(exact_match, texts, references)) / n,
        "token_f1": sum(map(token_f1, texts, references)) / n,
        **generation_metrics(texts, references),
    }


def details(replies: Sequence[Reply], references: Sequence[str], labels: list[str] | None) -> dict:
    """Per-class metrics and confusion matrix for label answers; nothing extra for free text."""
    if not labels:
        return {}
    return classification_details([extract_label(r.text, labels) for r in replies], references, labels)


def is_correct(reply: Reply, reference: str, labels: list[str] | None) -> bool:
    """Whether one answer is right: its extracted label, or its normalised text, equals the reference."""
    if labels:
        return extract_label(reply.text, labels) == reference
    return bool(exact_match(reply.text, reference))


# fmt: off
RECIPE = Recipe(
    name="sft", accepts=(Chat, Labeled, Pair, Preference, Feedback), peft_task_type="CAUSAL_LM", packs=True,
    methods=None,
    convert=convert, load_model=load_model, auto_class=auto_class, training=EngineTraining(encode_row, train_fns),
    evaluation=ChatEvaluation(generate_replies, score, is_correct, details, Reply, task_fns, encode),
    annotator="label_words", chat_replies=predict, hands_on_model=True,
)
# fmt: on


def recipe(cfg: RunConfig) -> Recipe:
    return RECIPE
