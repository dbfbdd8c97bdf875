"""One optimizer step's gradients: forward and backward over its micro-batches, the loss normalised by the targets
of the whole accumulation window on all processes, and batches moved to the device."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from tunesmith.engine.distributed import global_sum, is_deepspeed
from tunesmith.engine.packing import attention_implementation, merge_rows, pad_packed
from tunesmith.engine.task import Batch, TaskFns, TrainingError


def backward_window(
    model: Any,
    batches: Sequence[Batch | None],
    fns: TaskFns,
    accelerator: Any,
    trainable: list[torch.Tensor],
    filler: Batch | None = None,
) -> tuple[float, int, int]:
    """Accumulate the gradients of one optimizer step; return (mean loss per target, targets, tokens), all global.

    Each micro-batch's summed loss is divided by the targets of the whole window on all processes (times
    the process count, since DDP and DeepSpeed average gradients), so the result equals one big batch's gradient.
    An empty micro-batch contributes zero gradient; with ``filler`` it still runs a real forward and backward
    (on the filler batch), which DeepSpeed's collectives need.
    """
    world = accelerator.num_processes
    deepspeed = is_deepspeed(accelerator)
    local_targets = sum(fns.count_targets(b) for b in batches if b is not None)
    window_targets = int(global_sum(accelerator, local_targets))
    loss_total = torch.zeros((), device=accelerator.device)
    tokens = 0
    for position, batch in enumerate(batches):
        last = position == len(batches) - 1
        with _maybe_no_sync(accelerator, model, sync=last):
            if batch is not None and window_targets > 0:
                batch = to_device(batch, model, accelerator)
                loss_sum, _ = fns.loss(model, batch)
                loss_total += loss_sum.detach()
                tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else 0
                loss = loss_sum * world / window_targets
            elif filler is None:  # keeps every rank's backward count equal
                loss = sum(p.sum() for p in trainable) * 0.0
            else:
                loss = fns.loss(model, to_device(batch or filler, model, accelerator))[0] * 0.0
            if deepspeed and last:
                _stop_if_not_finite(accelerator, loss_total, window_targets)
            accelerator.backward(loss)
    totals = global_sum(accelerator, torch.stack([loss_total, torch.tensor(float(tokens), device=loss_total.device)]))
    return float(totals[0]) / max(window_targets, 1), window_targets, int(totals[1])


def to_device(batch: Batch, model: Any, accelerator: Any) -> Batch:
    """Move a batch to the accelerator. For FlexAttention, packed rows become one row padded to a multiple of 128."""
    batch = {k: v.to(accelerator.device, non_blocking=True) for k, v in batch.items()}
    if "seq_ids" in batch and attention_implementation(model) == "flex_attention":
        batch = pad_packed(merge_rows(batch), 128)
    return batch


def _maybe_no_sync(accelerator: Any, model: Any, sync: bool) -> Any:
    """Skip the gradient all-reduce on all but the last micro-batch of a window.

    DeepSpeed ZeRO-2/3 refuses ``no_sync``; there the gradient state says "not a boundary", so the engine
    accumulates and reduces/steps only at the last micro-batch's backward.
    """
    if sync:
        return contextlib.nullcontext()
    return _not_a_boundary(accelerator) if is_deepspeed(accelerator) else accelerator.no_sync(model)


@contextlib.contextmanager
def _not_a_boundary(accelerator: Any) -> Iterator[None]:
    # what accelerate's own `accumulate` does between boundaries; DeepSpeed reads it in `accelerator.backward`
    accelerator.gradient_state._set_sync_gradients(False)
    try:
        yield
    finally:
        accelerator.gradient_state._set_sync_gradients(True)


def _stop_if_not_finite(accelerator: Any, loss_total: torch.Tensor, window_targets: int) -> None:
    """DeepSpeed steps inside the last backward, so a non-finite step cannot be skipped: stop before it."""
    total = float(global_sum(accelerator, loss_total))
    if not math.isfinite(total):
        raise TrainingError(
            f"non-finite loss ({total / max(window_targets, 1)}) under DeepSpeed, which steps inside backward and "
            "cannot skip a step; the weights were not changed by it. Lower training.learning_rate or use "
            "training.precision fp32"
        )
