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

from tunesmith.core.errors import TunesmithError
from tunesmith.data.render import IGNORE_INDEX

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
    if impl == "flex_attention":
        mask = document_block_mask(batch["seq_ids"])
    elif impl in ("sdpa", "eager"):
        mask = block_causal_mask(batch["seq_ids"], None if impl == "sdpa" else _compute_dtype(model))
    else:
        raise TunesmithError(
            f"packing needs sdpa, eager or flex_attention attention, but the model uses {impl!r}; "
            "set training.packing=false or load the model with sdpa attention"
        )
    return {"input_ids": batch["input_ids"], "attention_mask": mask, "position_ids": batch["position_ids"]}


def document_block_mask(seq_ids: torch.Tensor) -> Any:
    """A FlexAttention ``BlockMask`` with the same rule as ``block_causal_mask``; blocks of other examples are skipped.

    On a GPU this is what makes packing pay: attention costs what each example alone costs, not the row's square.
    """
    from torch.nn.attention.flex_attention import create_block_mask

    def same_example_causal(b: torch.Tensor, _h: torch.Tensor, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        return (seq_ids[b, q] == seq_ids[b, kv]) & (kv <= q)

    rows, length = seq_ids.shape
    return create_block_mask(same_example_causal, rows, None, length, length, device=seq_ids.device, _compile=True)


def merge_rows(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """All examples of a packed batch in one row, without the padding at the ends of rows.

    Under a FlexAttention document mask a row's cost is the sum of its examples' costs, whatever its length,
    so one row wastes nothing; under a dense mask (SDPA, eager) it would cost the row's square.
    """
    if "seq_ids" not in batch or batch["seq_ids"].size(0) == 1:
        return batch
    seq_ids = batch["seq_ids"]
    real = seq_ids != PAD_SEQ
    documents = seq_ids + torch.arange(seq_ids.size(0), device=seq_ids.device)[:, None] * seq_ids.size(1)
    merged = {key: value[real][None] for key, value in batch.items() if key != "seq_ids"}
    merged["seq_ids"] = documents[real][None]
    return merged


def pad_packed(batch: dict[str, torch.Tensor], multiple: int) -> dict[str, torch.Tensor]:
    """Pad a packed batch's rows to a multiple of ``multiple`` tokens (padding attends only to padding).

    Compiled FlexAttention kernels are specialised to the row length; rounding it up keeps recompiles rare.
    """
    length = batch["input_ids"].size(1)
    extra = -length % multiple
    if not extra or "seq_ids" not in batch:
        return batch
    fill = {"labels": IGNORE_INDEX, "seq_ids": PAD_SEQ, "attention_mask": 0}
    out = {}
    for key, value in batch.items():
        if value.dim() != 2 or value.size(1) != length:
            out[key] = value
        elif key == "position_ids":
            tail = value[:, -1:] + torch.arange(1, extra + 1, device=value.device)
            out[key] = torch.cat([value, tail], dim=1)
        else:
            pad = torch.full((value.size(0), extra), fill.get(key, 0), dtype=value.dtype, device=value.device)
            out[key] = torch.cat([value, pad], dim=1)
    return out


def attention_implementation(model: Any) -> str:
    """The attention implementation of a (possibly DDP- or peft-wrapped) transformers model."""
    inner = getattr(model, "module", model)
    config = getattr(inner, "config", None)
    return str(getattr(config, "_attn_implementation", None) or "eager")


def _compute_dtype(model: Any) -> torch.dtype:
    if torch.is_autocast_enabled():
        return torch.get_autocast_dtype("cuda" if torch.cuda.is_available() else "cpu")
    return next(model.parameters()).dtype


def split_rows(batch: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """A packed batch as one batch per row, each cut to its real tokens (no padding left to compute).

    Batches that are not packed rows (no ``seq_ids``, or tensors of other shapes) come back whole.
    """
    if "seq_ids" not in batch or any(v.shape != batch["seq_ids"].shape for v in batch.values()):
        return [batch]
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    return [{k: v[r : r + 1, : max(1, n)] for k, v in batch.items()} for r, n in enumerate(lengths)]
