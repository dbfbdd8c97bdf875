"""What reading a data source yields: a ``Row`` (values with their line) or a ``Reject`` (why a line is unusable)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

EXCERPT = 120


@dataclass
class Row:
    line: int
    values: dict[str, Any]
    file: str | None = None  # set when a source holds several files (a folder of texts)


@dataclass
class Reject:
    source: str  # "file:line"
    reason: str
    excerpt: str
    kind: str = "invalid_row"

    def to_dict(self) -> dict[str, str]:
        return {"source": self.source, "kind": self.kind, "reason": self.reason, "excerpt": self.excerpt}


@dataclass(frozen=True)
class ReadOptions:
    """How to read a file beyond what its name says (``data.header``, ``data.sheet``, ``data.tag_column``)."""

    header: bool | None = None  # None: CSV/TSV/Excel have one; a .txt found to be delimited: guessed
    sheet: str | None = None  # Excel: the sheet (default the first)
    tag_column: int = -1  # CoNLL: the column holding the tag (0 is the token)
    column_names: tuple[str, ...] = ()  # names data.columns maps to: a first row holding one is a header


@dataclass
class Loaded:
    rows: list[Row]
    rejects: list[Reject]
    columns: list[str]


RowStream = Iterator[Row | Reject]
