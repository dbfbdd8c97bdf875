"""What a recipe and the engine exchange: the batch, the three task functions, and the error that stops training."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tunesmith.core.errors import TunesmithError

Batch = dict[str, torch.Tensor]


class TrainingError(TunesmithError):
    """Training cannot continue (e.g. the loss became NaN)."""


@dataclass
class TaskFns:
    """What a recipe gives the engine."""

    collate: Callable[[Sequence[Any]], Batch]
    count_targets: Callable[[Batch], int]
    loss: Callable[[Any, Batch], tuple[torch.Tensor, int]]
