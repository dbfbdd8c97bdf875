"""Split-level preparation steps: duplicates dropped inside train, validation/test held out of train, rows that
leak into a later split dropped, and the row limits (``data.train_rows`` ...) applied.
"""

from __future__ import annotations

import random
from typing import Any

from tunesmith.core.config import DataConfig, DedupConfig
from tunesmith.core.errors import DataError
from tunesmith.data.dedup import content_hash, find_duplicates, find_overlap
from tunesmith.data.ledger import Ledger
from tunesmith.data.record_text import dedup_text, excerpt
from tunesmith.data.records import Record, stratum
from tunesmith.data.rows import Reject
from tunesmith.data.split import assign_split, stratified_splits

SPLITS = ("train", "validation", "test")


def dedup_within(records: list[Record], cfg: DedupConfig, ledger: Ledger) -> list[Record]:
    """Drop exact and near duplicates inside the training data, keeping the first occurrence."""
    if not cfg.exact:
        return records
    matches = find_duplicates([dedup_text(r) for r in records], cfg.near, cfg.threshold, cfg.num_perm)
    drop = set()
    for m in matches:
        what = "exact duplicate" if m.kind == "exact" else f"near duplicate (similarity {m.similarity:.2f})"
        reason = f"{what} of {records[m.of].source}"
        ledger.reject(Reject(records[m.index].source, reason, excerpt(records[m.index]), kind=f"{m.kind}_duplicate"))
        drop.add(m.index)
    return [r for i, r in enumerate(records) if i not in drop]


def hold_out(train: list[Record], data: DataConfig, seed: int) -> dict[str, list[Record]]:
    """Carve validation/test out of train by hash (stable when rows are added), stratified by label if asked."""
    fractions = {n: f for n in ("validation", "test") if (f := getattr(data, f"{n}_fraction")) > 0}
    if not fractions:
        return {"train": train}
    keys = [content_hash(dedup_text(r)) for r in train]
    labels = [stratum(r) for r in train]
    if data.stratify and any(label is not None for label in labels):
        names = stratified_splits(keys, labels, seed, fractions)
    else:
        names = [assign_split(k, seed, fractions) for k in keys]
    out: dict[str, list[Record]] = {"train": [], **{n: [] for n in fractions}}
    for record, name in zip(train, names, strict=True):
        out[name].append(record)
    for name, rows in out.items():
        if not rows:
            raise DataError(
                f"holding out data.validation_fraction={data.validation_fraction} / "
                f"data.test_fraction={data.test_fraction} of {len(train)} training rows leaves no {name} rows"
            )
    return out


def remove_leaks(splits: dict[str, list[Record]], sources: dict[str, Any], cfg: DedupConfig, ledger: Ledger) -> None:
    """Drop rows that repeat a row of a later split: validation rows found in test, train rows in either."""
    order = [n for n in SPLITS if n in splits]
    for i, name in enumerate(order[:-1]):
        for other in order[i + 1 :]:
            if name in sources and sources.get(name) == sources.get(other):
                ledger.notes.append(f"{name} and {other} are the same file; the leak check between them is skipped")
                continue
            records = splits[name]
            matches = find_overlap(
                [dedup_text(r) for r in records],
                [dedup_text(r) for r in splits[other]],
                cfg.near,
                cfg.threshold,
                cfg.num_perm,
            )
            for m in matches:
                how = "exact copy" if m.kind == "exact" else f"near copy (similarity {m.similarity:.2f})"
                ledger.reject(
                    Reject(
                        records[m.index].source,
                        f"{how} of {other} row {splits[other][m.of].source}",
                        excerpt(records[m.index]),
                        kind=f"leak_into_{other}",
                    )
                )
            leaked = {m.index for m in matches}
            splits[name] = [r for j, r in enumerate(records) if j not in leaked]


def apply_limits(splits: dict[str, list[Record]], data: DataConfig, seed: int, ledger: Ledger) -> None:
    train = splits["train"]
    if data.train_rows and len(train) > data.train_rows:
        if data.train_sample == "random":
            picked = sorted(random.Random(seed).sample(range(len(train)), data.train_rows))
            splits["train"] = [train[i] for i in picked]
        else:
            splits["train"] = train[: data.train_rows]
        ledger.drop_unlisted("over_train_rows", len(train) - data.train_rows)
    for name in ("validation", "test"):
        limit = getattr(data, f"{name}_rows")
        if name in splits and limit and len(splits[name]) > limit:
            ledger.drop_unlisted(f"over_{name}_rows", len(splits[name]) - limit)
            splits[name] = splits[name][:limit]
