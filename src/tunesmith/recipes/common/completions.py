"""Prompt + completion token ids for preference and RL recipes: the prompt rendered with the chat template
(and its generation prompt), the completion as the tokens the template puts after it (reply + end of turn)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from tunesmith.core.errors import DataError
from tunesmith.data.records import Message
from tunesmith.data.render import IGNORE_INDEX, _dicts, render_prompt


def completion_text(prompt: list[Message], reply: str, tokenizer: Any, source: str = "") -> tuple[str, str]:
    """(prompt text, completion text): the chat rendered up to the assistant turn, and what follows it."""
    before = render_prompt(prompt, tokenizer)
    through = tokenizer.apply_chat_template(_dicts([*prompt, Message("assistant", reply)]), tokenize=False)
    if not through.startswith(before):
        raise DataError(
            f"{source}: the chat template does not render the reply after the prompt's generation prompt "
            "(not prefix-stable), so completion tokens cannot be located; use a different chat template"
        )
    return before, through[len(before) :].rstrip()  # trailing newlines after the turn are template glue


def token_ids(text: str, tokenizer: Any) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def fit(prompt: list[int], completions: Sequence[list[int]], max_len: int) -> tuple[list[int], list[list[int]], bool]:
    """Cut to ``max_len`` tokens per row: the prompt loses its start first (the recent turns matter most),
    keeping at least half the budget for completions; completions then lose their ends."""
    longest = max(len(c) for c in completions)
    if len(prompt) + longest <= max_len:
        return prompt, list(completions), False
    keep_prompt = max(max_len - longest, max_len // 2)
    prompt = prompt[-keep_prompt:] if keep_prompt > 0 else []
    room = max_len - len(prompt)
    return prompt, [c[:room] for c in completions], True


def pad_rows(rows: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids`` / ``attention_mask`` and ``labels`` (the completion tokens; prompt ignored)."""
    width = max(len(p) + len(c) for p, c in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (prompt, completion) in enumerate(rows):
        ids = prompt + completion
        input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        labels[i, len(prompt) : len(ids)] = torch.tensor(completion, dtype=torch.long)
        attention_mask[i, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
