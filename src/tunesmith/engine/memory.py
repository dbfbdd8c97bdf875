"""GPU memory: a clear message on out-of-memory, and finding the largest micro-batch that fits."""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from typing import Any

import torch

from tunesmith.core.config import TrainingConfig
from tunesmith.core.errors import TunesmithError


class OutOfMemory(TunesmithError):
    """Training ran out of accelerator memory."""


def is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def oom_message(cfg: TrainingConfig, method: str | None, where: str) -> str:
    """What ran out, and the settings that lower memory, with the values in use."""
    tips = [
        f"training.micro_batch_size: auto (or lower than {cfg.micro_batch_size or cfg.batch_size}): the same "
        "result in smaller pieces",
        f"training.batch_size (now {cfg.batch_size}) lower and training.grad_accum (now {cfg.grad_accum}) higher: "
        "the same examples per step",
        f"training.max_seq_len (now {cfg.max_seq_len}) lower: shorter rows",
    ]
    if not cfg.gradient_checkpointing:
        tips.append("training.gradient_checkpointing: true (about 30% slower, far fewer stored activations)")
    if method in (None, "full", "freeze"):
        tips.append("method.name: lora or qlora (no gradients or optimizer state for the frozen weights)")
    elif method == "lora":
        tips.append("method.name: qlora (4-bit base weights)")
    return f"out of GPU memory {where}.\n  fix, any of:\n    " + "\n    ".join(tips)


def release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def find_micro_batch(fits: Callable[[int], None], largest: int) -> int:
    """The largest n <= ``largest`` for which ``fits(n)`` does not run out of memory (halving, then bisecting).

    ``fits(n)`` runs a forward and backward pass on the n longest examples and raises on out-of-memory.
    """
    low, high, n = 0, largest, largest
    while low < high:
        try:
            fits(n)
            low = n
        except (torch.OutOfMemoryError, RuntimeError) as error:
            if not is_oom(error):
                raise
            high = n - 1
        finally:
            release_memory()
        n = (low + high + 1) // 2
    if low == 0:
        raise OutOfMemory("training.micro_batch_size: auto: even a single example does not fit in memory")
    return low


def split(indices: Sequence[int], size: int | None, pad_to: int = 0) -> list[list[int]]:
    """Pieces of at most ``size`` examples (all of them in one piece when size is None).

    With ``pad_to``, empty pieces are appended up to the number a list of ``pad_to`` indices would give, so
    the count does not depend on how many indices this rank got.
    """
    if not size or len(indices) <= size:
        pieces = [list(indices)]
    else:
        pieces = [list(indices[i : i + size]) for i in range(0, len(indices), size)]
    wanted = -(-pad_to // size) if size and pad_to else 1 if pad_to else 0
    return pieces + [[] for _ in range(wanted - len(pieces))]


def longest_first(lengths: Sequence[int], n: int) -> list[int]:
    """Indices of the ``n`` longest examples: the hardest micro-batch a run can meet."""
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])[:n]


def example_length(example: Any) -> int:
    ids = getattr(example, "input_ids", None)
    return len(ids) if ids is not None else 0
