"""A few whole examples from a run's prepared data, as token ids: the inputs a merged or exported model is checked
on (its logits against the run's tuned model)."""

from __future__ import annotations

from typing import Any

import torch

from tunesmith.core.fs import read_jsonl
from tunesmith.core.rundir import RunDir
from tunesmith.data.records import Chat, Message, record_from_dict
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


def probe_inputs(run_dir: RunDir, tokenizer: Any) -> list[torch.Tensor]:
    """Token ids of a chat's prompt and reply, or of other records' texts (e.g. an lm run's documents); random ids
    when the run has no prepared data left."""
    for split in ("test", "validation", "train"):
        path = run_dir.split(split)
        if path.is_file():
            records = [record_from_dict(row) for row in read_jsonl(path)[:PROBES]]
            if records:
                texts = [
                    render_prompt(r.prompt_messages(), tokenizer, r.tools) + r.reference()
                    if isinstance(r, Chat)
                    else "\n".join(record_texts(r))
                    for r in records
                ]
                return [tokenizer(t, add_special_tokens=False, return_tensors="pt")["input_ids"] for t in texts]
    generator = torch.Generator().manual_seed(0)
    return [torch.randint(0, len(tokenizer), (1, 32), generator=generator) for _ in range(PROBES)]
