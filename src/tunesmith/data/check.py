"""``tunesmith data check``: validate every row of a file and report problems grouped by kind.

Errors make a row unusable (it would be rejected by ``prepare``); warnings are rows that will be used but
deserve a look (duplicates, rows longer than the model's context, personal data).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.core.config import DataConfig
from tunesmith.core.errors import DataError
from tunesmith.data.dedup import find_duplicates, find_overlap
from tunesmith.data.formats import check_columns, detect_format, rows_to_records, unused_columns
from tunesmith.data.ingest import read_options, row_format_of
from tunesmith.data.load import load_source
from tunesmith.data.pii import find_pii
from tunesmith.data.record_text import dedup_text
from tunesmith.data.records import Record, texts
from tunesmith.data.tokens import TokenCounter, length_stats

WARNINGS = ("exact_duplicate", "near_duplicate", "too_long", "pii", "overlap")


@dataclass
class Problem:
    kind: str
    source: str  # "file:line"
    message: str
    excerpt: str = ""

    @property
    def severity(self) -> str:
        return "warning" if self.kind in WARNINGS else "error"

    @property
    def line(self) -> str:
        return self.source.rsplit(":", 1)[-1]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "line": self.line, "severity": self.severity}


@dataclass
class CheckResult:
    file: str
    format: str | None = None
    rows: int = 0
    valid_rows: int = 0
    problems: list[Problem] = field(default_factory=list)
    tokens: dict[str, Any] | None = None
    unused_columns: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def by_kind(self) -> dict[str, list[Problem]]:
        groups: dict[str, list[Problem]] = {}
        for problem in self.problems:
            groups.setdefault(problem.kind, []).append(problem)
        return groups

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "format": self.format,
            "rows": self.rows,
            "valid_rows": self.valid_rows,
            "errors": len(self.errors),
            "warnings": len(self.problems) - len(self.errors),
            "counts": {kind: len(items) for kind, items in self.by_kind().items()},
            "problems": [p.to_dict() for p in self.problems],
            "tokens": self.tokens,
            "unused_columns": self.unused_columns,
        }


def check_file(
    spec: str,
    data: DataConfig | None = None,
    tokenizer: Any = None,
    max_tokens: int | None = None,
    against: str | None = None,
) -> CheckResult:
    """Validate every row of ``spec``; never raises for bad data (a whole-file problem is one error)."""
    data = data or DataConfig(train=spec)
    result = CheckResult(spec)
    try:
        records = _load(spec, data, result)
    except DataError as exc:
        result.problems.append(Problem("unreadable_file", f"{spec}:0", str(exc)))
        return result
    result.valid_rows = len(records)
    _duplicates(records, data, result)
    _pii(records, result)
    if against:
        _overlap(records, against, data, result)
    if tokenizer is not None:
        result.tokens = _token_lengths(records, data, tokenizer, max_tokens, result)
    result.problems.sort(key=lambda p: (_line_number(p.source), p.kind))
    return result


def _load(spec: str, data: DataConfig, result: CheckResult) -> list[Record]:
    loaded = load_source(spec, None if data.reader == "auto" else data.reader, read_options(data))
    result.rows = len(loaded.rows) + len(loaded.rejects)
    result.problems += [Problem(r.kind, r.source, r.reason, r.excerpt) for r in loaded.rejects]
    if not loaded.rows:
        return []
    fmt = row_format_of("auto", data)
    fmt.kind = detect_format(spec, loaded.rows, data.format, data.prompt_template, fmt.columns, data.text_template)
    result.format = fmt.kind
    check_columns(spec, loaded.columns, fmt)
    result.unused_columns = unused_columns(loaded.columns, fmt)
    records, bad = rows_to_records(spec, loaded.rows, fmt)
    result.problems += [Problem(r.kind, r.source, r.reason, r.excerpt) for r in bad]
    return records


def _duplicates(records: list[Record], data: DataConfig, result: CheckResult) -> None:
    cfg = data.dedup
    for m in find_duplicates([dedup_text(r) for r in records], cfg.near, cfg.threshold, cfg.num_perm):
        how = "repeats" if m.kind == "exact" else f"nearly repeats (similarity {m.similarity:.2f})"
        result.problems.append(
            Problem(
                f"{m.kind}_duplicate",
                records[m.index].source,
                f"{how} line {_line(records[m.of])}",
                _ex(records[m.index]),
            )
        )


def _pii(records: list[Record], result: CheckResult) -> None:
    for record in records:
        kinds = Counter(kind for text in texts(record) for _, _, kind in find_pii(text))
        if kinds:
            found = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
            result.problems.append(Problem("pii", record.source, f"personal data or secrets: {found}", _ex(record)))


def _overlap(records: list[Record], against: str, data: DataConfig, result: CheckResult) -> None:
    other = CheckResult(against)
    reference = _load(against, data, other)
    cfg = data.dedup
    found = find_overlap(
        [dedup_text(r) for r in records], [dedup_text(r) for r in reference], cfg.near, cfg.threshold, cfg.num_perm
    )
    for m in found:
        result.problems.append(
            Problem("overlap", records[m.index].source, f"also in {reference[m.of].source}", _ex(records[m.index]))
        )


def _token_lengths(
    records: list[Record], data: DataConfig, tokenizer: Any, max_tokens: int | None, result: CheckResult
) -> dict[str, Any]:
    lengths = TokenCounter(tokenizer, label_names=dict(data.label_names), as_chat=True).count(records)
    for record, n in zip(records, lengths, strict=True):
        if max_tokens and n > max_tokens:
            result.problems.append(
                Problem("too_long", record.source, f"{n} tokens, more than the model's {max_tokens}", _ex(record))
            )
    return length_stats(lengths, max_tokens)


def _line(record: Record) -> str:
    return record.source.rsplit(":", 1)[-1]


def _line_number(source: str) -> int:
    tail = source.rsplit(":", 1)[-1].removeprefix("item ")
    return int(tail) if tail.isdigit() else 0


def _ex(record: Record) -> str:
    text = " | ".join(texts(record))
    return text if len(text) <= 80 else text[:77] + "..."


def format_text(result: CheckResult) -> str:
    """A human-readable report: problems grouped by kind, each with its line and an excerpt."""
    lines = [f"{result.file}: {result.rows} rows, format {result.format or '?'}, {result.valid_rows} valid"]
    if result.unused_columns:
        lines.append(
            f"columns not used: {', '.join(result.unused_columns)} (data.columns / data.text_template use them)"
        )
    for kind, items in sorted(result.by_kind().items(), key=lambda kv: (kv[1][0].severity, kv[0])):
        lines.append(f"{items[0].severity} {kind} ({len(items)}):")
        for p in items[:20]:
            excerpt = f"  | {p.excerpt[:80]}" if p.excerpt else ""
            lines.append(f"  line {p.line}: {p.message}{excerpt}")
        if len(items) > 20:
            lines.append(f"  ... and {len(items) - 20} more (use --json for all)")
    if result.tokens:
        t = result.tokens
        lines.append(
            f"tokens per row: min {t['min']}, p50 {t['p50']}, p90 {t['p90']}, p99 {t['p99']}, max {t['max']}, "
            f"total {t['total']}" + (f" (model context {t['limit']})" if t.get("limit") else "")
        )
        peak = max(b["rows"] for b in t["histogram"]) or 1
        for b in t["histogram"]:
            lines.append(f"  {b['from']:>6}-{b['to']:<6} {'#' * round(30 * b['rows'] / peak)} {b['rows']}")
    errors = len(result.errors)
    lines.append(f"{errors} error(s), {len(result.problems) - errors} warning(s)")
    return "\n".join(lines)


def context_length(model_dir: str | Path) -> int | None:
    """The model's context window from its config.json (no weights loaded)."""
    import json

    config = Path(model_dir) / "config.json"
    if not config.is_file():
        return None
    values = json.loads(config.read_text(encoding="utf-8"))
    return values.get("max_position_embeddings") or values.get("n_positions") or values.get("max_seq_len")
