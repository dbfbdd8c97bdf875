"""A few whole examples from a run's prepared data, as token ids: the inputs a merged or exported model is checked
on (its logits against the run's tuned model)."""

from __future__ import annotations

from typing import Any

import torch

from tunesmith.core.fs import read_jsonl
from tunesmith.core.rundir import RunDir
from tunesmith.data.records import Chat, record_from_dict
from tunesmith.data.records import texts as record_texts
from tunesmith.data.render import render_prompt

PROBES = 4


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
