"""Prepare the splits of a run: load -> records -> clean -> PII -> dedup -> split -> leak check -> limits -> write.

Every row read ends up kept or dropped for a counted reason (``report.json``: rows_in = kept + dropped);
dropped problem rows go to ``rejects.jsonl`` with file, line and reason.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.config import CleanConfig, DataConfig, DedupConfig, ParallelFiles, PiiConfig, TaskConfig
from tunesmith.data import clean
from tunesmith.data.augment import augment_train
from tunesmith.data.convert import to_chat
from tunesmith.data.dedup import content_hash, find_duplicates, find_overlap
from tunesmith.data.formats import RowError, RowFormat, check_columns, detect_format, rows_to_records
from tunesmith.data.load import Reject, Row, iter_source, read_parallel
from tunesmith.data.pii import redact
from tunesmith.data.records import (
    Chat,
    Feedback,
    Labeled,
    Pair,
    Preference,
    Record,
    Text,
    map_text,
    record_to_dict,
    stratum,
    texts,
)
from tunesmith.data.report import Ledger
from tunesmith.data.split import assign_split, stratified_splits
from tunesmith.data.tokens import TokenCounter, length_stats
from tunesmith.errors import DataError
from tunesmith.io import write_json, write_jsonl

SPLITS = ("train", "validation", "test")
FORMAT_SAMPLE = 1000  # rows read before the format is decided
CHUNK_ROWS = 10_000  # rows converted to records at a time


@dataclass
class Loaded:
    records: list[Record]
    rejects: list[Reject]
    format: str
    rows_in: int


@dataclass
class Prepared:
    splits: dict[str, list[Any]]  # the task's records (Chat for sft)
    rejects: list[Reject] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        return self.summary or {"rows": {n: len(c) for n, c in self.splits.items()}, "rejected": len(self.rejects)}


def load_records(spec: str | Path | ParallelFiles, data: DataConfig, reader: str | None = None) -> Loaded:
    """Read one source and turn its rows into typed records (rejecting, not losing, the rows that cannot be).

    Rows are converted as they stream in, a chunk at a time; only the records are kept, not the raw rows.
    """
    if isinstance(spec, ParallelFiles):
        pairs, pair_rejects, _ = read_parallel(spec.source, spec.target)
        if not pairs:
            raise DataError(f"{spec.source}, {spec.target}: no line-aligned rows")
        stream: Iterator[Row | Reject] = iter([*pair_rejects, *pairs])
        spec = spec.source
    else:
        stream = iter_source(str(spec), reader or (None if data.reader == "auto" else data.reader))
    rejects: list[Reject] = []
    head: list[Row] = []  # the first rows decide the format
    for item in stream:
        if isinstance(item, Reject):
            rejects.append(item)
        else:
            head.append(item)
            if len(head) == FORMAT_SAMPLE:
                break
    if not head:
        first = f"; first: {rejects[0].source}: {rejects[0].reason}" if rejects else ""
        raise DataError(f"{spec}: no usable rows ({len(rejects)} rejected{first})" if rejects else f"{spec}: no rows")
    kind = detect_format(spec, head, data.format, data.prompt_template, data.columns)
    fmt = RowFormat(
        kind=kind,
        prompt_template=data.prompt_template,
        completion_template=data.completion_template,
        label_column=data.label_column,
        label_names=dict(data.label_names),
        columns=dict(data.columns),
    )
    check_columns(spec, list(dict.fromkeys(key for row in head for key in row.values)), fmt)
    records: list[Record] = []
    rows_in = len(rejects)
    chunk = head
    for item in itertools.chain(stream, [None]):
        if isinstance(item, Reject):
            rejects.append(item)
            rows_in += 1
            continue
        if item is not None:
            chunk.append(item)
        if len(chunk) >= CHUNK_ROWS or (item is None and chunk):
            converted, bad = rows_to_records(spec, chunk, fmt)
            records += converted
            rejects += bad
            rows_in += len(chunk)
            chunk = []
    return Loaded(records, rejects, kind, rows_in)


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
    return Prepared(chats, ledger.rejects, {**ledger.report(chats, labels), **augmented})


def data_splits_needed(data: DataConfig) -> list[str]:
    return [n for n in ("validation", "test") if getattr(data, n) or getattr(data, f"{n}_fraction") > 0]


def clean_records(
    records: list[Record], cfg: CleanConfig, ledger: Ledger, tokens: TokenCounter | None = None
) -> list[Record]:
    """Apply each enabled cleaning step, counting the rows each one changed; drop rows it empties or filters out.

    The token-length limits need ``tokens`` (the model's tokenizer); without it they are not applied.
    """
    steps = []
    if cfg.strip_html:
        steps.append(("html", clean.strip_html))
    if cfg.unicode != "none":
        steps.append(("unicode", lambda t: clean.normalize_unicode(t, cfg.unicode)))
    if cfg.control_chars:
        steps.append(("control_chars", clean.strip_control))
    if cfg.whitespace:
        steps.append(("whitespace", clean.tidy_whitespace))
    raw_steps = list(steps)  # raw text (Text records) also loses repeated and boilerplate lines
    if cfg.boilerplate_min_docs:
        documents = (r.text for r in records if isinstance(r, Text))
        boilerplate = clean.common_lines(documents, cfg.boilerplate_min_docs)
        if boilerplate:
            raw_steps.insert(0, ("boilerplate_lines", lambda t: clean.drop_lines(t, boilerplate)))
    if cfg.repeated_lines:
        raw_steps.insert(0, ("repeated_lines", clean.drop_repeated_lines))
    detect = clean.LanguageDetector() if cfg.languages else None
    kept = []
    for record in records:
        changed: set[str] = set()
        state = {"size": 0, "emptied": False}
        record_steps = raw_steps if isinstance(record, Text) else steps

        def _clean(text: str, changed: set[str] = changed, state: dict = state, steps: list = record_steps) -> str:
            was_blank = not text.strip()
            for name, step in steps:
                new = step(text)
                if new is not text and new != text:
                    changed.add(name)
                    text = new
            state["size"] += len(text)
            state["emptied"] |= not was_blank and not text.strip()
            return text

        record = map_text(record, _clean)
        ledger.changed.update(changed)
        size = state["size"]
        problem = None
        if state["emptied"]:
            problem = ("empty_after_cleaning", "a text field is empty after cleaning")
        elif size < cfg.min_chars:
            problem = ("too_short", f"{size} characters, below data.clean.min_chars={cfg.min_chars}")
        elif cfg.max_chars is not None and size > cfg.max_chars:
            problem = ("too_long", f"{size} characters, above data.clean.max_chars={cfg.max_chars}")
        elif detect and (found := detect("\n".join(texts(record)))) and found[0] not in cfg.languages:
            problem = (
                "wrong_language",
                f"detected language '{found[0]}' (probability {found[1]:.2f}); data.clean.languages is "
                f"{', '.join(cfg.languages)}",
            )
        if problem:
            ledger.reject(Reject(record.source, problem[1], _excerpt(record), kind=problem[0]))
        else:
            kept.append(record)
    if tokens is not None and (cfg.min_tokens or cfg.max_tokens):
        kept = _token_limits(kept, cfg, tokens, ledger)
    return kept


def _token_limits(records: list[Record], cfg: CleanConfig, tokens: TokenCounter, ledger: Ledger) -> list[Record]:
    kept = []
    for record, n in zip(records, tokens.count(records), strict=True):
        if n < cfg.min_tokens:
            reason = ("too_few_tokens", f"{n} tokens, below data.clean.min_tokens={cfg.min_tokens}")
        elif cfg.max_tokens is not None and n > cfg.max_tokens:
            reason = ("too_many_tokens", f"{n} tokens, above data.clean.max_tokens={cfg.max_tokens}")
        else:
            kept.append(record)
            continue
        ledger.reject(Reject(record.source, reason[1], _excerpt(record), kind=reason[0]))
    return kept


def scan_pii(records: list[Record], cfg: PiiConfig, ledger: Ledger) -> list[Record]:
    """Count PII per type; in redact mode replace each with its placeholder (``<EMAIL>``)."""
    if cfg.mode == "off":
        return records
    out = []
    for record in records:
        found: Counter[str] = Counter()

        def _redact(text: str, found: Counter[str] = found) -> str:
            new, counts = redact(text, cfg.phone_region)
            found.update(counts)
            return new

        redacted = map_text(record, _redact)
        ledger.pii.update(found)
        if found:
            ledger.changed["rows_with_pii"] += 1
        out.append(redacted if cfg.mode == "redact" else record)
    if cfg.mode == "redact" and ledger.changed["rows_with_pii"]:
        ledger.changed["pii_redacted"] = ledger.changed["rows_with_pii"]
    return out


def dedup_within(records: list[Record], cfg: DedupConfig, ledger: Ledger) -> list[Record]:
    """Drop exact and near duplicates inside the training data, keeping the first occurrence."""
    if not cfg.exact:
        return records
    matches = find_duplicates([dedup_text(r) for r in records], cfg.near, cfg.threshold, cfg.num_perm)
    drop = set()
    for m in matches:
        what = "exact duplicate" if m.kind == "exact" else f"near duplicate (similarity {m.similarity:.2f})"
        reason = f"{what} of {records[m.of].source}"
        ledger.reject(Reject(records[m.index].source, reason, _excerpt(records[m.index]), kind=f"{m.kind}_duplicate"))
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
                        _excerpt(records[m.index]),
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


def as_chats(records: list[Record], data: DataConfig, task: TaskConfig, ledger: Ledger) -> list[Chat]:
    return convert_records(records, lambda r: to_chat(r, data.label_names, task.system_prompt), ledger)


def convert_records(records: list[Record], convert: Convert, ledger: Ledger) -> list[Any]:
    """Each record converted for the task; rows it rejects are counted in the ledger with the reason."""
    converted = []
    for record in records:
        try:
            converted.append(convert(record))
        except RowError as exc:
            ledger.reject(Reject(record.source, str(exc), _excerpt(record), kind=exc.kind))
    return converted


def dedup_text(record: Record) -> str:
    """What duplicates are compared on: every text of the record (and its label, so relabelled rows differ)."""
    if "content" in record.meta:  # a template row: its values, not the shared template text
        return record.meta["content"]
    label = stratum(record)
    return "\n".join(texts(record)) + (f"\n{label}" if label is not None else "")


def _excerpt(record: Record) -> str:
    text = " | ".join(texts(record))
    return text if len(text) <= 120 else text[:117] + "..."


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
