"""Which examples go into which micro-batch of which optimizer step, as a pure function of the seed.

Making the order a function of (seed, epoch, step) rather than of a DataLoader's internal state is what
lets a resumed run see exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import math

import torch


def steps_per_epoch(n_examples: int, examples_per_step: int) -> int:
    return max(1, math.ceil(n_examples / examples_per_step))


def total_steps(n_examples: int, examples_per_step: int, epochs: float, max_steps: int | None) -> int:
    if max_steps:
        return max_steps
    return max(1, math.ceil(steps_per_epoch(n_examples, examples_per_step) * epochs))


def epoch_order(n_examples: int, seed: int, epoch: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed + epoch)
    return torch.randperm(n_examples, generator=generator).tolist()


def step_micro_batches(
    n_examples: int,
    step: int,
    *,
    batch_size: int,
    grad_accum: int,
    seed: int,
    world_size: int = 1,
    rank: int = 0,
) -> list[list[int]]:
    """Example indices of each of this rank's ``grad_accum`` micro-batches for optimizer step ``step``.

    A step takes the next ``batch_size * grad_accum * world_size`` examples of the epoch's shuffled order;
    ranks take interleaved slices. The last step of an epoch may be short, so some micro-batches may be
    empty: the engine still runs them (with zero loss) so every rank does the same number of backwards.
    """
    per_step = batch_size * grad_accum * world_size
    per_epoch = steps_per_epoch(n_examples, per_step)
    epoch, index_in_epoch = divmod(step, per_epoch)
    order = epoch_order(n_examples, seed, epoch)
    window = order[index_in_epoch * per_step : (index_in_epoch + 1) * per_step]
    mine = window[rank::world_size]
    return [mine[i * batch_size : (i + 1) * batch_size] for i in range(grad_accum)]
