"""A few whole examples from a run's prepared data, as model inputs: the inputs a merged or exported model is checked
on (its outputs against the run's tuned model)."""

from __future__ import annotations

from typing import Any

import torch

from tunesmith.core.fs import read_jsonl
from tunesmith.core.rundir import RunDir
from tunesmith.data.records import Chat, Message, Pair, Record, record_from_dict
from tunesmith.data.records import texts as record_texts
from tunesmith.data.render import render_prompt

PROBES = 4


# asked when a run's records are not chats (an lm run's documents): a GGUF's greedy replies are compared on these
FALLBACK_QUESTIONS = ("What is the capital of France?", "Count from 1 to 12.", "Write one sentence about the sea.")


def probe_prompts(run_dir: RunDir, tokenizer: Any) -> list[str]:
    """Chat prompts (rendered with the chat template, ready for the reply) of a few of the run's chat records, or of
    a few fixed questions when it has none."""
    for split in ("test", "validation", "train"):
        path = run_dir.split(split)
        if path.is_file():
            chats = [r for r in (record_from_dict(row) for row in read_jsonl(path)[:PROBES]) if isinstance(r, Chat)]
            if chats:
                return [render_prompt(r.prompt_messages(), tokenizer, r.tools) for r in chats]
    return [render_prompt([Message("user", q)], tokenizer) for q in FALLBACK_QUESTIONS]


def probe_inputs(
    run_dir: RunDir, tokenizer: Any, max_len: int | None = None, decoder_start: int | None = None
) -> list[dict[str, torch.Tensor]]:
    """Model inputs (batch of one) of a few rows of the run's data: a chat's prompt and reply, or other records'
    texts with the tokenizer's special tokens (e.g. an lm run's documents, a classifier's texts); cut to
    ``max_len`` tokens. ``decoder_start`` (an encoder-decoder's decoder start token) adds ``decoder_input_ids``: a
    pair's target after that token (the source goes to the encoder). Random ids when the run has no prepared data
    left."""
    for split in ("test", "validation", "train"):
        path = run_dir.split(split)
        if path.is_file():
            records = [record_from_dict(row) for row in read_jsonl(path)[:PROBES]]
            if records:
                return [_inputs(r, tokenizer, max_len, decoder_start) for r in records]
    generator = torch.Generator().manual_seed(0)
    ids = [torch.randint(0, len(tokenizer), (1, 32), generator=generator) for _ in range(PROBES)]
    if decoder_start is None:
        return [{"input_ids": x} for x in ids]
    return [{"input_ids": x, "decoder_input_ids": torch.cat([torch.tensor([[decoder_start]]), x], 1)} for x in ids]


def _inputs(record: Record, tokenizer: Any, max_len: int | None, decoder_start: int | None) -> dict[str, torch.Tensor]:
    if isinstance(record, Chat):
        text = render_prompt(record.prompt_messages(), tokenizer, record.tools) + record.reference()
        return {"input_ids": _ids(tokenizer, text, max_len, special=False)}
    if decoder_start is None:
        return {"input_ids": _ids(tokenizer, "\n".join(record_texts(record)), max_len)}
    source, target = (record.source_text, record.target) if isinstance(record, Pair) else (record_texts(record)[0],) * 2
    decoder = _ids(tokenizer, target, max_len)
    return {
        "input_ids": _ids(tokenizer, source, max_len),
        "decoder_input_ids": torch.cat([torch.tensor([[decoder_start]]), decoder[:, :-1]], 1),
    }


def _ids(tokenizer: Any, text: str, max_len: int | None, special: bool = True) -> torch.Tensor:
    cut = {"truncation": True, "max_length": max_len} if max_len else {}
    return tokenizer(text, add_special_tokens=special, return_tensors="pt", **cut)["input_ids"]
