"""Supervised fine-tuning of a causal LM on chats: loss on assistant tokens, greedy generation to predict."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from tunesmith.data.records import Chat
from tunesmith.data.render import IGNORE_INDEX, Encoded, encode_chat, render_prompt
from tunesmith.engine.loop import Batch, TaskFns
from tunesmith.engine.progress import track
from tunesmith.metrics.classification import classification_metrics
from tunesmith.metrics.text import exact_match, extract_label, token_f1


def encode(chat: Chat, tokenizer: Any, train_on: str, max_len: int) -> Encoded:
    return encode_chat(chat, tokenizer, train_on=train_on, max_len=max_len)


def collate(examples: Sequence[Encoded], pad_id: int) -> Batch:
    """Right-pad to the longest example in the batch."""
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


def count_targets(batch: Batch) -> int:
    """Tokens that are predicted and carry a label (labels shift left by one)."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def loss(model: Any, batch: Batch) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over target tokens, and their count."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = batch["labels"][:, 1:]
    loss_sum = F.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.size(-1)),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return loss_sum, int((targets != IGNORE_INDEX).sum())


def task_fns(tokenizer: Any) -> TaskFns:
    pad_id = tokenizer.pad_token_id
    return TaskFns(collate=lambda examples: collate(examples, pad_id), count_targets=count_targets, loss=loss)


@torch.no_grad()
def predict(
    model: Any,
    tokenizer: Any,
    chats: Sequence[Chat],
    max_new_tokens: int,
    batch_size: int,
    description: str = "predict",
) -> list[str]:
    """Greedy replies to each chat's prompt (the messages before its final assistant reply)."""
    model.eval()
    device = next(model.parameters()).device
    prompts = [render_prompt(chat.prompt_messages(), tokenizer) for chat in chats]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths pad less
    replies: list[str] = [""] * len(prompts)
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
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            new_tokens = output[:, encoded["input_ids"].shape[1] :]
            for i, text in zip(indices, tokenizer.batch_decode(new_tokens, skip_special_tokens=True), strict=True):
                replies[i] = text.strip()
    finally:
        tokenizer.padding_side = previous_side
    return replies


def score(predictions: list[str], references: list[str], labels: list[str] | None) -> dict[str, float]:
    """Classification metrics when the answers come from a label set, else exact match and token F1."""
    if labels:
        return classification_metrics([extract_label(p, labels) for p in predictions], references, labels)
    n = max(len(predictions), 1)
    return {
        "exact_match": sum(map(exact_match, predictions, references)) / n,
        "token_f1": sum(map(token_f1, predictions, references)) / n,
    }
