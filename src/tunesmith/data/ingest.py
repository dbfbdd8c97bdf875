"""Read one data source as typed records: its rows streamed in, the format decided on the first ones, then the
rows converted a chunk at a time (rejecting, not losing, the rows that cannot be converted).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tunesmith.core.config import DataConfig, ParallelFiles
from tunesmith.core.errors import DataError
from tunesmith.data.formats import RowFormat, check_columns, detect_format, rows_to_records
from tunesmith.data.load import iter_source, read_parallel
from tunesmith.data.records import Record
from tunesmith.data.rows import Reject, Row

FORMAT_SAMPLE = 1000  # rows read before the format is decided
CHUNK_ROWS = 10_000  # rows converted to records at a time


@dataclass
class Loaded:
    records: list[Record]
    rejects: list[Reject]
    format: str
    rows_in: int


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
