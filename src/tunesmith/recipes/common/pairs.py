"""Preference pairs and judged replies as token ids, batched, and their summed completion log-probabilities:
what DPO-style training and the evaluation of any chat policy on pairs (win rate, reward accuracy) share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from tunesmith.data.records import Feedback, Preference
from tunesmith.recipes.common.completions import completion_text, fit, pad_rows, token_ids
from tunesmith.recipes.common.preference_losses import sequence_logps
from tunesmith.recipes.contract import Batch


@dataclass
class PreferenceExample:
    """One pair (``completions`` = [chosen, rejected]) or one judged reply (``completions`` = [reply], ``label``)."""

    prompt: list[int]
    completions: list[list[int]]
    truncated: bool
    label: bool | None = None
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def input_ids(self) -> list[int]:
        return self.prompt + self.completions[0]

    @property
    def n_targets(self) -> int:
        return min(len(c) for c in self.completions)


def encode(record: Preference | Feedback, tokenizer: Any, max_len: int) -> PreferenceExample:
    """Prompt ids shared by the completions; each completion is what the chat template renders after it."""
    replies = [record.chosen, record.rejected] if isinstance(record, Preference) else [record.completion]
    prompt_text = ""
    completions = []
    for reply in replies:
        prompt_text, text = completion_text(record.prompt, reply, tokenizer, record.source)
        completions.append(token_ids(text, tokenizer))
    prompt, completions, truncated = fit(token_ids(prompt_text, tokenizer), completions, max_len)
    label = record.label if isinstance(record, Feedback) else None
    return PreferenceExample(prompt, completions, truncated, label, record.source)


def collate(examples: Sequence[PreferenceExample], pad_id: int) -> Batch:
    """Pairs: rows [chosen..., rejected...]. Judged replies: their rows, labels in ``desirable``, and rows with
    each prompt given the next example's reply (``kl_*``), whose log-ratio estimates KTO's KL reference point."""
    if examples[0].label is None:
        rows = [(e.prompt, e.completions[0]) for e in examples] + [(e.prompt, e.completions[1]) for e in examples]
        return pad_rows(rows, pad_id)
    batch = pad_rows([(e.prompt, e.completions[0]) for e in examples], pad_id)
    batch["desirable"] = torch.tensor([bool(e.label) for e in examples])
    n = len(examples)
    mismatched = pad_rows([(e.prompt, examples[(i + 1) % n].completions[0]) for i, e in enumerate(examples)], pad_id)
    batch |= {f"kl_{k}": v for k, v in mismatched.items()}
    return batch


def unwrap(model: Any) -> Any:
    """The model inside accelerate's DDP wrapper, if any."""
    return getattr(model, "module", model)


def is_adapter_model(model: Any) -> bool:
    from peft import PeftModel

    return isinstance(unwrap(model), PeftModel)


def logps(model: Any, batch: Batch, prefix: str = "") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(summed completion log-probs, completion token counts, logits) of the rows ``prefix``input_ids."""
    out = model(input_ids=batch[f"{prefix}input_ids"], attention_mask=batch[f"{prefix}attention_mask"])
    total, count = sequence_logps(out.logits, batch[f"{prefix}labels"])
    return total, count, out.logits
