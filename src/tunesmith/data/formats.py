"""Row formats: detect which one a file uses and turn its rows into typed records.

A row problem raises ``RowError`` with a ``kind`` (``missing_field``, ``wrong_type``, ...) that ``data check``
groups by and the report counts by.

This module holds the detection and the conversion loop; the per-format parsers (``PARSERS``) live in ``parsers``,
on top of ``fields`` (``RowFormat``, ``RowError``, typed field readers) and ``messages`` (chat messages). Those
names are importable from here too.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from tunesmith.core.errors import DataError
from tunesmith.data.fields import RowError, RowFormat, template_fields
from tunesmith.data.messages import MESSAGE_KEYS, parse_messages, transcript_messages
from tunesmith.data.parsers import PARSERS, SHAREGPT_ROLES
from tunesmith.data.records import Record
from tunesmith.data.rows import Reject, Row

__all__ = [
    "FORMATS",
    "MESSAGE_KEYS",
    "PARSERS",
    "SHAREGPT_ROLES",
    "SIGNATURES",
    "SYNONYMS",
    "RowError",
    "RowFormat",
    "canonical",
    "check_columns",
    "detect_format",
    "parse_messages",
    "row_format",
    "rows_to_records",
    "template_fields",
    "transcript_messages",
]

# format -> the columns that identify it, in detection order (more specific first).
SIGNATURES: dict[str, tuple[str, ...]] = {
    "messages": ("messages",),
    "sharegpt": ("conversations",),
    "openai_preference": ("input", "preferred_output", "non_preferred_output"),
    "preference": ("chosen", "rejected"),
    "feedback": ("prompt", "completion", "label"),
    "prompt_completion": ("prompt", "completion"),
    "alpaca": ("instruction", "output"),
    "squad": ("context", "question", "answers"),
    "pair": ("source", "target"),
    "tagged": ("tokens", "tags"),
    "labeled": ("text", "label"),
    "text": ("text",),
}
FORMATS = (*SIGNATURES, "template")
SYNONYMS = {"sentence": "text", "ner_tags": "tags"}  # common names of canonical columns


def canonical(values: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    """Rename a row's columns to the canonical names: the config's ``data.columns`` first, then synonyms."""
    if not columns:
        if not any(theirs in values for theirs in SYNONYMS):
            return values  # nothing to rename: parsers only read the row
        out = dict(values)
    else:
        renamed = {theirs: ours for ours, theirs in columns.items()}
        out = {renamed.get(k, k): v for k, v in values.items()}
    for theirs, ours in SYNONYMS.items():
        if theirs in out and ours not in out:
            out[ours] = out.pop(theirs)
    return out


def row_format(keys: list[str] | set[str]) -> str | None:
    """The first format whose identifying columns are all present."""
    return next((name for name, needed in SIGNATURES.items() if set(needed) <= set(keys)), None)


def detect_format(
    path: Any, rows: list[Row], requested: str, prompt_template: str | None, columns: dict[str, str] | None = None
) -> str:
    """The config's format, or for ``auto`` the format most rows have (a template if one is set)."""
    if requested != "auto":
        return requested
    if prompt_template:
        return "template"
    votes = Counter(row_format(canonical(r.values, columns or {}).keys()) for r in rows[:1000])
    votes.pop(None, None)
    if votes:
        return votes.most_common(1)[0][0]
    seen = list(dict.fromkeys(k for r in rows[:1000] for k in r.values))
    raise DataError(
        f"{path}: cannot tell the data format from its columns ({', '.join(seen)}).\n"
        "  expected one of: " + "; ".join(f"{n} ({'+'.join(c)})" for n, c in SIGNATURES.items()) + "\n"
        "  fix: map your columns with data.columns (e.g. {text: review, label: stars}), "
        "or set data.prompt_template (e.g. 'Review: {sentence}') with data.completion_template"
    )


def check_columns(path: Any, seen: list[str], fmt: RowFormat) -> None:
    """Fail before any work if the format needs a column the file does not have."""
    if fmt.kind == "template":
        needed = template_fields(fmt.prompt_template or "") + template_fields(fmt.completion_template)
    else:
        needed = list(SIGNATURES.get(fmt.kind, ()))
    present = set(canonical(dict.fromkeys(seen), fmt.columns)) | set(seen)
    missing = [c for c in dict.fromkeys(needed) if c not in present]
    if missing:
        raise DataError(
            f"{path}: column {', '.join(repr(c) for c in missing)} is not in the file "
            f"(columns: {', '.join(seen)}).\n  fix: rename the column, map it with data.columns, or change "
            "data.prompt_template / data.completion_template / data.format"
        )


def rows_to_records(path: Any, rows: list[Row], fmt: RowFormat) -> tuple[list[Record], list[Reject]]:
    """Convert rows; a row that cannot be converted is rejected with its kind and reason, never lost."""
    parse = PARSERS[fmt.kind]
    records: list[Record] = []
    rejects: list[Reject] = []
    for row in rows:
        where = f"{row.file or path}:{row.line}"
        values = row.values if fmt.kind == "template" else canonical(row.values, fmt.columns)
        try:
            record = parse(values, fmt)
        except RowError as exc:
            reason = str(exc)
            other = row_format(canonical(row.values, fmt.columns).keys())
            if exc.kind == "missing_field" and other and other != fmt.kind:
                reason += f" (this row looks like '{other}' but the file is '{fmt.kind}': mixed formats in one file)"
            rejects.append(Reject(where, reason, _excerpt(row.values), kind=exc.kind))
            continue
        record.source = where
        records.append(record)
    return records, rejects


def _excerpt(values: dict[str, Any]) -> str:
    text = str(values)
    return text if len(text) <= 120 else text[:117] + "..."
