"""Read rows from JSONL, JSON, CSV and TSV files, each with its line number; bad rows are rejected, not lost."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.errors import DataError

SUPPORTED = (".jsonl", ".json", ".csv", ".tsv")


@dataclass
class Row:
    line: int
    values: dict[str, Any]


@dataclass
class Reject:
    source: str  # "file:line"
    reason: str
    excerpt: str

    def to_dict(self) -> dict[str, str]:
        return {"source": self.source, "reason": self.reason, "excerpt": self.excerpt}


def read_rows(path: str | Path) -> tuple[list[Row], list[Reject], list[str]]:
    """Return (rows, rejects, columns) of a data file; raise DataError if the file is unusable as a whole."""
    path = Path(path)
    if not path.exists():
        raise DataError(
            f"data file not found: {path}\n  fix: check the path in data.train / data.validation / data.test "
            "(relative paths are relative to the config file)"
        )
    if path.suffix.lower() not in SUPPORTED:
        raise DataError(f"{path}: unsupported file type '{path.suffix}'; expected one of {', '.join(SUPPORTED)}")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte {exc.start}); re-save the file as UTF-8") from None
    if not text.strip():
        raise DataError(f"{path}: the file is empty; it needs at least one example")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows, rejects = _read_jsonl(path, text)
    elif suffix == ".json":
        rows, rejects = _read_json_array(path, text)
    else:
        rows, rejects = _read_delimited(path, text, "\t" if suffix == ".tsv" else ",")
    if not rows:
        raise DataError(
            f"{path}: no usable rows ({len(rejects)} rejected; first: {rejects[0].reason})"
            if rejects
            else f"{path}: no rows"
        )
    columns = list(dict.fromkeys(key for row in rows for key in row.values))
    return rows, rejects, columns


def _read_jsonl(path: Path, text: str) -> tuple[list[Row], list[Reject]]:
    rows, rejects = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            rejects.append(Reject(f"{path}:{number}", f"malformed JSON: {exc.msg} at column {exc.colno}", line[:120]))
            continue
        if not isinstance(value, dict):
            rejects.append(
                Reject(f"{path}:{number}", f"expected a JSON object, got {type(value).__name__}", line[:120])
            )
            continue
        rows.append(Row(number, value))
    return rows, rejects


def _read_json_array(path: Path, text: str) -> tuple[list[Row], list[Reject]]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: malformed JSON: {exc.msg}") from None
    if not isinstance(value, list):
        raise DataError(f"{path}: expected a JSON array of objects, got {type(value).__name__}")
    rows, rejects = [], []
    for index, item in enumerate(value):
        if isinstance(item, dict):
            rows.append(Row(index + 1, item))  # for a JSON array, "line" is the 1-based item index
        else:
            rejects.append(
                Reject(f"{path}:item {index + 1}", f"expected an object, got {type(item).__name__}", str(item)[:120])
            )
    return rows, rejects


def _read_delimited(path: Path, text: str, delimiter: str) -> tuple[list[Row], list[Reject]]:
    # QUOTE_NONE for TSV: GLUE-style TSVs contain bare quotes that are part of the text.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    header = next(reader, None)
    if not header:
        raise DataError(f"{path}: no header row")
    header = [h.strip() for h in header]
    rows, rejects = [], []
    for cells in reader:
        number = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            rejects.append(
                Reject(
                    f"{path}:{number}",
                    f"expected {len(header)} fields ({', '.join(header)}), got {len(cells)}",
                    delimiter.join(cells)[:120],
                )
            )
            continue
        rows.append(Row(number, dict(zip(header, cells, strict=True))))
    return rows, rejects
