"""Prepare the splits of a run: load -> records -> clean -> PII -> dedup -> split -> leak check -> limits -> write.

Every row read ends up kept or dropped for a counted reason (``report.json``: rows_in = kept + dropped);
dropped problem rows go to ``rejects.jsonl`` with file, line and reason.

This module is the orchestration; the steps live in ``ingest`` (a source to records), ``scrub`` (cleaning, filters,
PII) and ``partition`` (dedup, hold-out, leak check, limits). Their public names are importable from here too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.core.config import DataConfig, ParallelFiles, TaskConfig
from tunesmith.core.errors import DataError
from tunesmith.core.fs import write_json, write_jsonl
from tunesmith.data.augment import augment_train
from tunesmith.data.canaries import plant_canaries
from tunesmith.data.convert import to_chat
from tunesmith.data.formats import RowError
from tunesmith.data.ingest import CHUNK_ROWS, FORMAT_SAMPLE, Loaded, load_records
from tunesmith.data.ledger import Ledger
from tunesmith.data.partition import SPLITS, apply_limits, dedup_within, hold_out, remove_leaks
from tunesmith.data.record_text import dedup_text, excerpt
from tunesmith.data.records import Chat, Feedback, Labeled, Pair, Preference, Record, record_to_dict, stratum
from tunesmith.data.rows import Reject
from tunesmith.data.scrub import clean_records, scan_pii
from tunesmith.data.tokens import TokenCounter, length_stats

__all__ = [
    "CHAT_RECORDS",
    "CHUNK_ROWS",
    "FORMAT_SAMPLE",
    "SPLITS",
    "Convert",
    "Loaded",
    "Prepared",
    "apply_limits",
    "as_chats",
    "clean_records",
    "convert_records",
    "data_splits_needed",
    "dedup_text",
    "dedup_within",
    "hold_out",
    "load_eval_chats",
    "load_records",
    "prepare_data",
    "remove_leaks",
    "scan_pii",
    "write_prepared",
]


@dataclass
class Prepared:
    splits: dict[str, list[Any]]  # the task's records (Chat for sft)
    rejects: list[Reject] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        return self.summary or {"rows": {n: len(c) for n, c in self.splits.items()}, "rejected": len(self.rejects)}


Convert = Callable[[Record], Record]
CHAT_RECORDS = (Chat, Labeled, Pair, Preference, Feedback)


def prepare_data(
    data: DataConfig,
    task: TaskConfig,
    seed: int,
    convert: Convert | None = None,
    accepts: tuple[type, ...] = CHAT_RECORDS,
    tokens: TokenCounter | None = None,
) -> Prepared:
    """Load every configured split as records, cleaned, deduplicated, split, limited and accounted for.

    ``convert`` turns each kept record into what the task trains on (the recipe's ``convert``; by default a
    ``Chat`` for sft) and may reject a row with ``RowError``; ``accepts`` are the record types the task can use.
    ``tokens`` (the model's tokenizer) adds token lengths per split to the report and applies
    ``data.clean.min_tokens`` / ``max_tokens``, which need it.
    """
    if tokens is None and (data.clean.min_tokens or data.clean.max_tokens):
        raise DataError(
            "data.clean.min_tokens / max_tokens count tokens with the model's tokenizer, which this caller did not "
            "pass.\n  fix: run `tunesmith prepare` / `tunesmith run` (they load it), or use min_chars / max_chars"
        )
    ledger = Ledger()
    sources = {name: getattr(data, name) for name in SPLITS if getattr(data, name)}
    splits: dict[str, list[Record]] = {}
    for name, spec in sources.items():
        loaded = load_records(spec, data)
        if loaded.records and not isinstance(loaded.records[0], accepts):
            kind = type(loaded.records[0]).__name__
            wanted = ", ".join(t.__name__ for t in accepts)
            raise DataError(
                f"{spec}: rows in format '{loaded.format}' become {kind} records, which the '{task.name}' task cannot "
                f"train on (it needs {wanted} records).\n  fix: use data in a format the task reads "
                "(see docs/data.md), set data.format / data.columns, or pick the task that fits this data"
            )
        where = f"{spec.source} + {spec.target}" if isinstance(spec, ParallelFiles) else spec
        ledger.rows_in[f"{name}: {where}"] += loaded.rows_in
        if loaded.unused:
            ledger.unused_columns[f"{name}: {where}"] = loaded.unused
        for reject in loaded.rejects:
            ledger.reject(reject)
        records = clean_records(loaded.records, data.clean, ledger, tokens)
        splits[name] = scan_pii(records, data.pii, ledger)

    splits["train"] = dedup_within(splits["train"], data.dedup, ledger)
    splits.update(hold_out(splits.pop("train"), data, seed))
    splits = {name: splits[name] for name in SPLITS if name in splits}
    if data.dedup.across_splits:
        remove_leaks(splits, sources, data.dedup, ledger)
    apply_limits(splits, data, seed, ledger)
    augmented = augment_train(splits, data, seed, ledger)  # training rows only; off unless data.augment.copies

    labels = {name: Counter(s for r in records if (s := stratum(r)) is not None) for name, records in splits.items()}
    convert = convert or (lambda record: to_chat(record, data.label_names, task.system_prompt))
    chats = {name: convert_records(records, convert, ledger) for name, records in splits.items()}
    planted = plant_canaries(chats.get("train", []), data.canaries, seed) if data.canaries else []
    if tokens is not None:
        ledger.tokens = {name: length_stats(tokens.count(rows), tokens.max_len) for name, rows in chats.items()}
    for name in ("train", *data_splits_needed(data)):
        if not chats.get(name):
            report = ledger.report(chats, labels)
            first = f"; first: {ledger.rejects[0].source}: {ledger.rejects[0].reason}" if ledger.rejects else ""
            raise DataError(
                f"no {name} rows left after preparation: {report['rows_in']} rows read, "
                f"dropped by reason {report['dropped']}{first}"
            )
    canaries = {"canaries": len(planted)} if planted else {}
    return Prepared(chats, ledger.rejects, {**ledger.report(chats, labels), **augmented, **canaries})


def data_splits_needed(data: DataConfig) -> list[str]:
    return [n for n in ("validation", "test") if getattr(data, n) or getattr(data, f"{n}_fraction") > 0]


def as_chats(records: list[Record], data: DataConfig, task: TaskConfig, ledger: Ledger) -> list[Chat]:
    return convert_records(records, lambda r: to_chat(r, data.label_names, task.system_prompt), ledger)


def convert_records(records: list[Record], convert: Convert, ledger: Ledger) -> list[Any]:
    """Each record converted for the task; rows it rejects are counted in the ledger with the reason."""
    converted = []
    for record in records:
        try:
            converted.append(convert(record))
        except RowError as exc:
            ledger.reject(Reject(record.source, str(exc), excerpt(record), kind=exc.kind))
    return converted


def write_prepared(prepared: Prepared, out_dir: Path) -> None:
    """Write ``<split>.jsonl``, ``rejects.jsonl`` (every dropped row with its reason) and ``report.json``."""
    for name, records in prepared.splits.items():
        write_jsonl(out_dir / f"{name}.jsonl", (record_to_dict(r) for r in records))
    write_jsonl(out_dir / "rejects.jsonl", (r.to_dict() for r in prepared.rejects))
    write_json(out_dir / "report.json", prepared.report())


def load_eval_chats(
    spec: str | Path, data: DataConfig, task: TaskConfig, convert: Convert | None = None
) -> tuple[list[Any], list[Reject]]:
    """Rows of another file as the task's records (chats by default), read and cleaned like the run's data
    (no dedup, split or limits).

    For ``tunesmith eval RUN --data FILE``; rows that cannot be used are returned as rejects.
    """
    ledger = Ledger()
    loaded = load_records(spec, data)
    for reject in loaded.rejects:
        ledger.reject(reject)
    convert = convert or (lambda record: to_chat(record, data.label_names, task.system_prompt))
    chats = convert_records(clean_records(loaded.records, data.clean, ledger), convert, ledger)
    if not chats:
        raise DataError(f"{spec}: no usable rows to evaluate on ({len(ledger.rejects)} rejected)")
    return chats, ledger.rejects
