"""A labelling file: rows with a text and a (possibly missing) label, read and written back in place.

What annotation, the audit and the studio share. A row's ``label_source`` says who set its label: ``model``
(a pre-label, with ``confidence``) or anything else (a person; a labelled row with no ``label_source`` counts as a
person's). Rows that cannot be read are kept as rejects with file and line; JSONL files keep them verbatim on
write-back, so editing a file in place never loses a line.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.core.errors import DataError
from tunesmith.core.fs import write_text
from tunesmith.data.formats import SYNONYMS
from tunesmith.data.load import Reject, read_rows, reader_for

WRITABLE = ("jsonl", "json", "csv", "tsv")
TEXT_COLUMNS = ("text", *(k for k, v in SYNONYMS.items() if v == "text"))
MODEL = "model"


@dataclass(frozen=True)
class LabelSet:
    """The labels a row may take: the value stored in the file and the word a model scores (``0=negative``)."""

    values: tuple[str, ...]
    words: tuple[str, ...]

    @classmethod
    def parse(cls, spec: str | list[str]) -> LabelSet:
        """``positive,negative`` or ``0=negative,1=positive`` (file value = word a model is asked for)."""
        items = spec.split(",") if isinstance(spec, str) else list(spec)
        values, words = [], []
        for item in (i.strip() for i in items):
            if not item:
                continue
            value, _, word = item.partition("=")
            values.append(value.strip())
            words.append((word or value).strip())
        if len(values) < 2:
            raise DataError(f"--labels {spec!r}: give at least two labels, e.g. positive,negative or 0=neg,1=pos")
        for kind, seq in (("label", values), ("label word", words)):
            if len(set(seq)) != len(seq):
                raise DataError(f"--labels {spec!r}: a {kind} is listed twice")
        return cls(tuple(values), tuple(words))

    def word(self, value: str) -> str:
        return self.words[self.values.index(value)]

    def check(self, value: Any, where: str) -> str:
        """``value`` as a label of this set, or a DataError naming where it came from and what was expected."""
        text = label_text(value)
        if text not in self.values:
            raise DataError(
                f"{where}: label {value!r} is not in the label set; expected one of {', '.join(self.values)}"
            )
        return text


def label_text(value: Any) -> str | None:
    """A file's label value as text (``1`` and ``"1"`` are the same label); None or blank means unlabelled."""
    if value is None or (isinstance(value, float) and value != value):  # NaN from a Parquet/pandas null
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


@dataclass
class Item:
    """One readable row: its position, the line it came from and all its values (edited in place)."""

    index: int
    line: int
    values: dict[str, Any]

    def label(self, column: str) -> str | None:
        return label_text(self.values.get(column))

    @property
    def source(self) -> str | None:
        return self.values.get("label_source")

    def is_human(self, column: str) -> bool:
        """Labelled by a person: a label whose source is not the model."""
        return self.label(column) is not None and self.source != MODEL


@dataclass
class LabelFile:
    path: Path
    items: list[Item]
    rejects: list[Reject]
    columns: list[str]
    text_column: str
    label_column: str = "label"
    kind: str = "jsonl"
    raw_lines: list[str] = field(default_factory=list)  # JSONL only: every physical line, for verbatim write-back

    def text(self, item: Item) -> str:
        return str(item.values.get(self.text_column) or "")

    def texts(self) -> list[str]:
        return [self.text(item) for item in self.items]

    def labelled(self) -> list[Item]:
        return [i for i in self.items if i.label(self.label_column) is not None]

    def where(self, item: Item) -> str:
        return f"{self.path}:{item.line}"

    def save(self, path: Path | None = None) -> Path:
        """Write every row (and, for JSONL in place, every unreadable line verbatim) atomically."""
        target = Path(path or self.path)
        kind = writable_kind(target)
        if kind == "jsonl" and self.raw_lines and target.resolve() == self.path.resolve():
            lines = list(self.raw_lines)
            for item in self.items:
                lines[item.line - 1] = json.dumps(item.values, ensure_ascii=False)
            write_text(target, "".join(line + "\n" for line in lines))
        elif kind == "jsonl":
            write_text(target, "".join(json.dumps(i.values, ensure_ascii=False) + "\n" for i in self.items))
        elif kind == "json":
            write_text(target, json.dumps([i.values for i in self.items], indent=2, ensure_ascii=False) + "\n")
        else:
            write_text(target, _delimited([i.values for i in self.items], "\t" if kind == "tsv" else ","))
        return target


def writable_kind(path: Path) -> str:
    kind = reader_for(path) if path.suffix.lower() != ".gz" else "gz"
    if kind not in WRITABLE:
        raise DataError(
            f"{path}: labels can be written to {', '.join('.' + k for k in WRITABLE)} files, not '{path.suffix}'.\n"
            "  fix: write the result to a .jsonl file (--out labelled.jsonl)"
        )
    return kind


def read_label_file(path: str | Path, text_column: str | None = None, label_column: str = "label") -> LabelFile:
    """Read a file for labelling; raise DataError naming the file and its columns if it has no text column."""
    path = Path(path)
    rows, rejects, columns = read_rows(path)
    column = text_column or next((c for c in TEXT_COLUMNS if c in columns), None)
    if column is None or column not in columns:
        asked = f"column {text_column!r} is" if text_column else f"no text column ({' or '.join(TEXT_COLUMNS)}) is"
        raise DataError(
            f"{path}: {asked} in the file (columns: {', '.join(columns)}).\n"
            "  fix: name the column holding the text with --text-column NAME"
        )
    items = []
    for row in rows:
        value = row.values.get(column)
        if not isinstance(value, str) or not value.strip():
            got = "missing" if value is None else f"{type(value).__name__} {str(value)[:40]!r}"
            rejects.append(
                Reject(f"{path}:{row.line}", f"field {column!r}: expected non-empty text, got {got}", "", "empty_text")
            )
            continue
        items.append(Item(len(items), row.line, dict(row.values)))
    rejects.sort(key=lambda r: _line_of(r.source))
    kind = reader_for(path)
    raw_lines = []
    if kind == "jsonl" and path.suffix.lower() == ".jsonl":
        raw_lines = path.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    return LabelFile(path, items, rejects, columns, column, label_column, kind, raw_lines)


def _line_of(source: str) -> int:
    tail = source.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _delimited(rows: list[dict[str, Any]], delimiter: str) -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    if delimiter == "\t":  # as the reader: no quoting, so a tab or newline inside a value becomes a space
        lines = ["\t".join(columns), *("\t".join(_tsv_cell(row.get(k)) for k in columns) for row in rows)]
        return "".join(line + "\n" for line in lines)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([["" if row.get(k) is None else row.get(k) for k in columns] for row in rows])
    return buffer.getvalue()


def _tsv_cell(value: Any) -> str:
    return "" if value is None else str(value).replace("\t", " ").replace("\r", " ").replace("\n", " ")
