"""Hash-based split assignment: each row's split depends only on its own content and the seed.

Adding rows therefore never moves a row that was already assigned, and exact duplicates always land in the
same split. Every label is assigned with the same fractions independently, so label proportions are kept in
each split up to sampling noise (stratified in expectation, without a global shuffle that new rows would undo).
"""

from __future__ import annotations

import hashlib


def unit_hash(key: str, seed: int) -> float:
    """A uniform number in [0, 1) from a key and a seed."""
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def assign_split(key: str, seed: int, fractions: dict[str, float], rest: str = "train") -> str:
    """The split for a row: ``fractions`` maps split names to shares; what is left goes to ``rest``."""
    point = unit_hash(key, seed)
    edge = 0.0
    for name, share in fractions.items():
        edge += share
        if point < edge:
            return name
    return rest


def stratified_splits(
    keys: list[str], labels: list[str | None], seed: int, fractions: dict[str, float], rest: str = "train"
) -> list[str]:
    """Exact per-label fractions: within each label, rows ordered by their hash fill the splits in turn.

    A new row moves at most the rows at a boundary of its own label (a global shuffle would move any row).
    """
    groups: dict[str | None, list[int]] = {}
    for index, label in enumerate(labels):
        groups.setdefault(label, []).append(index)
    out = [rest] * len(keys)
    for members in groups.values():
        members.sort(key=lambda i: unit_hash(keys[i], seed))
        start, cumulative = 0, 0.0
        for name, share in fractions.items():
            cumulative += share
            end = round(len(members) * cumulative)
            for i in members[start:end]:
                out[i] = name
            start = end
    return out
