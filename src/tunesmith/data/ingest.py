"""Read one data source as typed records: its rows streamed in, the format decided on the first ones, then the
rows converted a chunk at a time (rejecting, not losing, the rows that cannot be converted).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tunesmith.core.config import DataConfig, ParallelFiles
from tunesmith.core.errors import DataError
from tunesmith.core.progress import Progress
from tunesmith.data.formats import RowFormat, check_columns, detect_format, rows_to_records, unused_columns
from tunesmith.data.load import iter_source, read_parallel
from tunesmith.data.records import Record
from tunesmith.data.rows import ReadOptions, Reject, Row

FORMAT_SAMPLE = 1000  # rows read before the format is decided
CHUNK_ROWS = 10_000  # rows converted to records at a time


@dataclass
class Loaded:
    records: list[Record]
    rejects: list[Reject]
    format: str
    rows_in: int
    unused: list[str] = field(default_factory=list)  # the file's columns no record reads


def read_options(data: DataConfig) -> ReadOptions:
    """The reader settings of a data section (header, sheet, the CoNLL tag column)."""
    return ReadOptions(
        header=data.header,
        sheet=data.sheet,
        tag_column=data.tag_column if isinstance(data.tag_column, int) else -1,
        column_names=tuple(data.columns.values()),
    )


def row_format_of(kind: str, data: DataConfig) -> RowFormat:
    """How rows in format ``kind`` become records under a data section's settings."""
    columns = dict(data.columns)
    if isinstance(data.tag_column, str):  # tags in a named column (pos_tags): data.columns' way of saying it
        columns.setdefault("tags", data.tag_column)
    return RowFormat(
        kind=kind,
        prompt_template=data.prompt_template,
        completion_template=data.completion_template,
        label_column=data.label_column,
        label_names=dict(data.label_names),
        columns=columns,
        text_template=data.text_template,
        tag_scheme=data.tag_scheme,
    )


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
        stream = iter_source(str(spec), reader or (None if data.reader == "auto" else data.reader), read_options(data))
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
    fmt = row_format_of("auto", data)
    kind = detect_format(spec, head, data.format, data.prompt_template, fmt.columns, data.text_template)
    fmt.kind = kind
    seen = list(dict.fromkeys(key for row in head for key in row.values))
    check_columns(spec, seen, fmt)
    records: list[Record] = []
    rows_in = len(rejects)
    chunk = head
    with Progress(None, f"read {Path(str(spec)).name}", unit="rows") as progress:
        for item in itertools.chain(stream, [None]):
            progress.advance()
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
    return Loaded(records, rejects, kind, rows_in, unused_columns(seen, fmt))
