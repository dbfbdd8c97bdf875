"""Padding-free packing: several examples share one row, and never see each other.

A packed row concatenates examples; ``position_ids`` restart at 0 for each example and ``seq_ids`` say which
example a token belongs to. The model then gets an explicit 4-D block-diagonal causal mask built from
``seq_ids``: in transformers 5.x, position ids alone do NOT isolate examples under SDPA or eager attention.

Written by hand because it is small and is the project's own contract (exact equality with running each
example alone); transformers' ``DataCollatorWithFlattening`` relies on flash-attention varlen kernels that
are not available on CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from tunesmith.data.render import IGNORE_INDEX
from tunesmith.errors import TunesmithError

PAD_SEQ = -1  # seq_ids of padding at the end of a row; padding attends only to padding


def plan_rows(lengths: Sequence[int], row_len: int) -> list[list[int]]:
    """Group example indices into rows of at most ``row_len`` tokens (first-fit decreasing, deterministic).

    An example longer than ``row_len`` gets a row of its own (callers truncate examples beforehand).
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    room: list[int] = []
    for index in order:
        size = lengths[index]
        slot = next((r for r, free in enumerate(room) if free >= size), None)
        if slot is None:
            rows.append([index])
            room.append(row_len - size)
        else:
            rows[slot].append(index)
            room[slot] -= size
    return rows


def pack(
    sequences: Sequence[tuple[Sequence[int], Sequence[int]]], row_len: int, pad_id: int
) -> dict[str, torch.Tensor]:
    """Pack ``(input_ids, labels)`` pairs into rows; return input_ids, labels, position_ids, seq_ids, attention_mask.

    The first label of every example is set to IGNORE_INDEX: in a packed row that token would otherwise be
    predicted from the previous example's last token. (Unpacked, position 0 is never predicted either.)
    ``attention_mask`` is the 2-D 1/0 mask of real tokens, kept for counting; the model gets ``block_mask``.
    """
    rows = plan_rows([len(ids) for ids, _ in sequences], row_len)
    width = max(sum(len(sequences[i][0]) for i in row) for row in rows)
    shape = (len(rows), width)
    input_ids = torch.full(shape, pad_id, dtype=torch.long)
    labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    seq_ids = torch.full(shape, PAD_SEQ, dtype=torch.long)
    for r, row in enumerate(rows):
        start = 0
        for doc, index in enumerate(row):
            ids, labs = sequences[index]
            end = start + len(ids)
            input_ids[r, start:end] = torch.tensor(ids, dtype=torch.long)
            labels[r, start:end] = torch.tensor(labs, dtype=torch.long)
            labels[r, start] = IGNORE_INDEX
            position_ids[r, start:end] = torch.arange(len(ids))
            seq_ids[r, start:end] = doc
            start = end
        position_ids[r, start:] = torch.arange(width - start)
    attention_mask = (seq_ids != PAD_SEQ).long()
    return {
        "input_ids": input_ids,
        "labels": labels,
        "position_ids": position_ids,
        "seq_ids": seq_ids,
        "attention_mask": attention_mask,
    }


def block_causal_mask(seq_ids: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A (batch, 1, len, len) mask: token i sees token j iff j <= i and both belong to the same example.

    Boolean (True = attend) when ``dtype`` is None, as SDPA prefers; otherwise additive (0 or the dtype's
    minimum), as eager attention adds it to the scores. Padding attends to padding, so no row is empty (no NaN).
    """
    length = seq_ids.shape[-1]
    same = seq_ids[:, :, None] == seq_ids[:, None, :]
    causal = torch.ones(length, length, dtype=torch.bool, device=seq_ids.device).tril()
    allowed = (same & causal)[:, None]
    if dtype is None:
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=seq_ids.device).masked_fill(~allowed, torch.finfo(dtype).min)


def model_inputs(model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keyword arguments for ``model(...)``: a 4-D block mask and restarting positions for packed batches."""
    if "seq_ids" not in batch:
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    impl = attention_implementation(model)
    if impl not in ("sdpa", "eager"):
        raise TunesmithError(
            f"packing needs sdpa or eager attention, but the model uses {impl!r}; "
            "set training.packing=false or load the model with sdpa attention"
        )
    dtype = None if impl == "sdpa" else _compute_dtype(model)
    return {
        "input_ids": batch["input_ids"],
        "attention_mask": block_causal_mask(batch["seq_ids"], dtype),
        "position_ids": batch["position_ids"],
    }


def attention_implementation(model: Any) -> str:
    """The attention implementation of a (possibly DDP- or peft-wrapped) transformers model."""
    inner = getattr(model, "module", model)
    config = getattr(inner, "config", None)
    return str(getattr(config, "_attn_implementation", None) or "eager")


def _compute_dtype(model: Any) -> torch.dtype:
    if torch.is_autocast_enabled():
        return torch.get_autocast_dtype("cuda" if torch.cuda.is_available() else "cpu")
    return next(model.parameters()).dtype
