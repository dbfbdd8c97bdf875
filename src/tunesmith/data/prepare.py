"""Prepare the splits of a run: load, convert to records, limit, hold out, and write them with a report."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from tunesmith.config import DataConfig, TaskConfig
from tunesmith.data.formats import ChatFormat, check_columns, detect_format, rows_to_chats
from tunesmith.data.load import Reject, read_rows
from tunesmith.data.records import Chat
from tunesmith.errors import DataError
from tunesmith.io import write_json, write_jsonl


@dataclass
class Prepared:
    splits: dict[str, list[Chat]]
    rejects: list[Reject] = field(default_factory=list)

    def report(self) -> dict[str, object]:
        return {
            "rows": {name: len(chats) for name, chats in self.splits.items()},
            "rejected": len(self.rejects),
            "rejected_by_reason": _count_reasons(self.rejects),
        }


def prepare_data(data: DataConfig, task: TaskConfig, seed: int) -> Prepared:
    """Load every configured split as Chat records, applying row limits and the validation hold-out."""
    splits: dict[str, list[Chat]] = {}
    rejects: list[Reject] = []
    for name in ("train", "validation", "test"):
        path = getattr(data, name)
        if path:
            chats, bad = load_chats(Path(path), data, task)
            splits[name], rejects = chats, rejects + bad

    train = splits["train"]
    if data.validation_fraction > 0:
        order = list(range(len(train)))
        random.Random(seed).shuffle(order)
        n_val = max(1, round(len(train) * data.validation_fraction))
        splits["validation"] = [train[i] for i in sorted(order[:n_val])]
        train = [train[i] for i in sorted(order[n_val:])]
        if not train:
            raise DataError(f"data.validation_fraction={data.validation_fraction} leaves no training rows")
    if data.train_rows and len(train) > data.train_rows:
        if data.train_sample == "random":
            picked = sorted(random.Random(seed).sample(range(len(train)), data.train_rows))
            train = [train[i] for i in picked]
        else:
            train = train[: data.train_rows]
    splits["train"] = train
    if "validation" in splits and data.validation_rows:
        splits["validation"] = splits["validation"][: data.validation_rows]
    if "test" in splits and data.test_rows:
        splits["test"] = splits["test"][: data.test_rows]
    return Prepared(splits, rejects)


def load_chats(path: Path, data: DataConfig, task: TaskConfig) -> tuple[list[Chat], list[Reject]]:
    rows, rejects, columns = read_rows(path)
    fmt = ChatFormat(
        kind=detect_format(path, columns, data.format, data.prompt_template),
        prompt_template=data.prompt_template,
        completion_template=data.completion_template,
        label_column=data.label_column,
        label_names={str(k): v for k, v in data.label_names.items()},
        system_prompt=task.system_prompt,
    )
    check_columns(path, columns, fmt)
    chats, bad = rows_to_chats(path, rows, fmt)
    if not chats:
        raise DataError(f"{path}: every row was rejected; first: {bad[0].source}: {bad[0].reason}")
    return chats, rejects + bad


def write_prepared(prepared: Prepared, out_dir: Path) -> None:
    """Write ``<split>.jsonl``, ``rejects.jsonl`` (every dropped row with its reason) and ``report.json``."""
    for name, chats in prepared.splits.items():
        write_jsonl(out_dir / f"{name}.jsonl", (c.to_dict() for c in chats))
    write_jsonl(out_dir / "rejects.jsonl", (r.to_dict() for r in prepared.rejects))
    write_json(out_dir / "report.json", prepared.report())


def _count_reasons(rejects: list[Reject]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for reject in rejects:
        kind = reject.reason.split(":")[0]
        counts[kind] = counts.get(kind, 0) + 1
    return counts
