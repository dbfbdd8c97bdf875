"""The validation loss: mean loss per target over held-out examples, shared among the processes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from tunesmith.engine.backward import to_device
from tunesmith.engine.distributed import equal_passes, global_sum
from tunesmith.engine.task import TaskFns


@torch.no_grad()
def evaluate_loss(model: Any, examples: Sequence[Any], fns: TaskFns, batch_size: int, accelerator: Any) -> float:
    """Mean loss per target over ``examples`` (each process takes an interleaved share)."""
    model.eval()
    world = accelerator.num_processes
    mine = list(range(accelerator.process_index, len(examples), world))
    total = torch.zeros((), device=accelerator.device)
    count = 0
    # Under DeepSpeed and FSDP every rank runs the same number of forwards (weights are gathered in each one).
    longest_share = math.ceil(len(examples) / world) if equal_passes(accelerator) else 0
    for start in range(0, max(len(mine), longest_share), batch_size):
        indices = mine[start : start + batch_size]
        batch = to_device(fns.collate([examples[i] for i in indices or [0]]), model, accelerator)
        loss_sum, n = fns.loss(model, batch)
        if indices:
            total += loss_sum.detach()
            count += n
    return float(global_sum(accelerator, total)) / max(int(global_sum(accelerator, count)), 1)
