"""Multi-task mixing: several datasets' training rows in one split, in proportion to their sampling weights."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

Row = TypeVar("Row")


def mix_counts(sizes: dict[str, int], weights: dict[str, float]) -> dict[str, int]:
    """How many rows each task contributes: the mix has as many rows as all tasks together, shared out by weight.

    A task whose share exceeds its rows is upsampled (rows repeat); one below is subsampled. Rounding keeps the
    total exact (largest remainders).
    """
    total = sum(sizes.values())
    weight_sum = sum(weights[name] for name in sizes)
    shares = {name: total * weights[name] / weight_sum for name in sizes}
    counts = {name: int(share) for name, share in shares.items()}
    by_remainder = sorted(sizes, key=lambda name: shares[name] - counts[name], reverse=True)
    for name in by_remainder[: total - sum(counts.values())]:
        counts[name] += 1
    return counts


def sample_rows(rows: Sequence[Row], count: int, rng: random.Random) -> list[Row]:
    """``count`` rows: every row once per full pass (upsampling), then a random subset for the rest."""
    passes, rest = divmod(count, len(rows)) if rows else (0, 0)
    return [*list(rows) * passes, *rng.sample(list(rows), rest)]


def mix_rows(parts: dict[str, Sequence[Row]], weights: dict[str, float], seed: int) -> list[Row]:
    """Rows of every task in weighted proportion, shuffled together (seeded)."""
    rng = random.Random(seed)
    counts = mix_counts({name: len(rows) for name, rows in parts.items()}, weights)
    mixed = [row for name, rows in parts.items() for row in sample_rows(rows, counts[name], rng)]
    rng.shuffle(mixed)
    return mixed
