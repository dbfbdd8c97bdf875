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
from tunesmith.data.fields import MISSING, RowError, RowFormat, column_root, lookup, render_template, template_fields
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
    "unused_columns",
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
# format -> every column its parser reads (the identifying ones and the optional ones)
READS: dict[str, tuple[str, ...]] = {
    **SIGNATURES,
    "messages": ("messages", "tools", "parallel_tool_calls"),
    "alpaca": ("instruction", "input", "output", "system"),
    "squad": ("context", "question", "answers", "answer_starts"),
    "labeled": ("text", "label", "text_pair"),
}
# format -> the field data.text_template builds (the input text of a task head)
TEMPLATED_FIELD = {"labeled": "text", "squad": "question", "pair": "source", "text": "text"}


def canonical(values: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    """Rename a row's columns to the canonical names: the config's ``data.columns`` first, then synonyms."""
    if not columns:
        if not any(theirs in values for theirs in SYNONYMS):
            return values  # nothing to rename: parsers only read the row
        out = dict(values)
    else:
        renamed = {theirs: ours for ours, theirs in columns.items()}
        out = {renamed.get(k, k): v for k, v in values.items()}
        for ours, theirs in columns.items():  # a dotted path into a nested value: review.body
            if theirs not in values and "." in theirs and (found := lookup(values, theirs)) is not MISSING:
                out[ours] = found
    for theirs, ours in SYNONYMS.items():
        if theirs in out and ours not in out:
            out[ours] = out.pop(theirs)
    return out


def row_format(keys: list[str] | set[str]) -> str | None:
    """The first format whose identifying columns are all present."""
    return next((name for name, needed in SIGNATURES.items() if set(needed) <= set(keys)), None)


def detect_format(
    path: Any,
    rows: list[Row],
    requested: str,
    prompt_template: str | None,
    columns: dict[str, str] | None = None,
    text_template: str | None = None,
) -> str:
    """The config's format, or for ``auto`` the format most rows have (a template if one is set).

    With ``text_template`` a row has a ``text`` even when no column is called so (the template builds it).
    """
    if requested != "auto":
        return requested
    if prompt_template:
        return "template"
    built = {"text"} if text_template else set()
    votes = Counter(row_format(canonical(r.values, columns or {}).keys() | built) for r in rows[:1000])
    votes.pop(None, None)
    if votes:
        return votes.most_common(1)[0][0]
    seen = list(dict.fromkeys(k for r in rows[:1000] for k in r.values))
    if all(str(k).isdigit() for k in seen):
        raise DataError(
            f"{path}: the file has no header, so its columns are numbered ({', '.join(seen)}).\n"
            "  fix: name them by position in data.columns, e.g. {text: 0, label: 1}"
        )
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
    if fmt.text_template:
        if fmt.kind not in TEMPLATED_FIELD:
            raise DataError(
                f"{path}: data.text_template builds one input text, but rows in format '{fmt.kind}' have none to "
                f"build (it applies to {', '.join(TEMPLATED_FIELD)}; a tagged row's input is its list of tokens).\n"
                "  fix: remove data.text_template"
            )
        needed = [c for c in needed if c != TEMPLATED_FIELD[fmt.kind]] + template_fields(fmt.text_template)
    present = set(canonical(dict.fromkeys(seen), fmt.columns)) | set(seen)
    present |= {ours for ours, theirs in fmt.columns.items() if column_root(theirs) in seen}  # dotted paths
    missing = [c for c in dict.fromkeys(needed) if c not in present and column_root(c) not in seen]
    if missing:
        mapped = {c: fmt.columns[c] for c in missing if c in fmt.columns}
        how = "".join(f"; data.columns maps {c!r} to {t!r}" for c, t in mapped.items())
        raise DataError(
            f"{path}: column {', '.join(repr(c) for c in missing)} is not in the file "
            f"(columns: {', '.join(seen)}{how}).\n  fix: rename the column, map it with data.columns, or change "
            "data.prompt_template / data.text_template / data.completion_template / data.format"
        )


def used_columns(fmt: RowFormat) -> set[str]:
    """The file's (top-level) columns that rows in this format are read from."""
    if fmt.kind == "template":
        fields = template_fields(fmt.prompt_template or "") + template_fields(fmt.completion_template)
        return {column_root(f) for f in fields} | {fmt.label_column}
    reads = set(READS.get(fmt.kind, ()))
    if fmt.text_template and fmt.kind in TEMPLATED_FIELD:
        reads.discard(TEMPLATED_FIELD[fmt.kind])
        reads |= {column_root(f) for f in template_fields(fmt.text_template)}
    used = set()
    for name in reads:
        if name in fmt.columns:
            used.add(column_root(fmt.columns[name]))
        else:
            used |= {name, *(theirs for theirs, ours in SYNONYMS.items() if ours == name)}
    return used


def unused_columns(seen: list[str], fmt: RowFormat) -> list[str]:
    """The file's columns that no part of a record comes from (shown once, so nothing is dropped silently)."""
    used = used_columns(fmt)
    return [c for c in seen if c not in used]


def rows_to_records(path: Any, rows: list[Row], fmt: RowFormat) -> tuple[list[Record], list[Reject]]:
    """Convert rows; a row that cannot be converted is rejected with its kind and reason, never lost."""
    parse = PARSERS[fmt.kind]
    records: list[Record] = []
    rejects: list[Reject] = []
    for row in rows:
        where = f"{row.file or path}:{row.line}"
        values = row.values if fmt.kind == "template" else canonical(row.values, fmt.columns)
        try:
            if fmt.text_template and fmt.kind in TEMPLATED_FIELD:
                values = {
                    **values,
                    TEMPLATED_FIELD[fmt.kind]: render_template(fmt.text_template, {**row.values, **values}),
                }
            record = parse(values, fmt)
        except RowError as exc:
            reason = str(exc)
            if exc.field in fmt.columns:
                reason += f" (data.columns reads it from {fmt.columns[exc.field]!r})"
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
