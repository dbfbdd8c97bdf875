"""Read rows from data files, each with its line number; bad rows are rejected with a reason, never lost.

Supported: JSONL, JSON (an array of objects, an object holding one, or SQuAD's nested layout), CSV/TSV (with or
without a header), Excel ``.xlsx``, Parquet, ``.gz`` of any text format, CoNLL (token and tag columns, tab- or
space-separated, blank line between sentences), ``.label`` lines (``LABEL text``, as TREC), plain ``.txt`` (one row
per line, or a table when its lines are tab- or comma-separated), a folder of ``.txt``/``.md`` files (one row per
file), a Hugging Face dataset saved with ``save_to_disk``, and a hub dataset named ``hf:NAME?name=CONFIG&split=SPLIT``.

Rows are streamed (``iter_source``): JSONL, CSV/TSV, CoNLL, ``.label`` and ``.txt`` are read a line at a time
(a line over ``MAX_ROW_BYTES`` is rejected unread), Parquet a record batch at a time, and Hugging Face datasets
through their memory-mapped Arrow files, so a file never has to fit in memory as a whole. Only a ``.json``
document (one JSON value) is parsed whole.

This module is the entry point and the dispatch; the readers live in ``text_readers`` (one per text format) and
``dataset_readers`` (Parquet, folders, Hugging Face datasets), on top of ``lines`` (bytes to bounded text lines).
``Row``, ``Reject`` and ``Loaded`` are defined in ``rows`` and importable from here.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path

from tunesmith.core.errors import DataError
from tunesmith.data.dataset_readers import read_folder, read_hub, read_parquet
from tunesmith.data.lines import check_text, decode, open_binary, read_all, stream_lines
from tunesmith.data.rows import EXCERPT, Loaded, ReadOptions, Reject, Row
from tunesmith.data.sheet_reader import read_xlsx
from tunesmith.data.sniff import guess_header, sniff_delimiter
from tunesmith.data.text_readers import (
    read_conll,
    read_delimited,
    read_json,
    read_jsonl,
    read_label_lines,
    read_text_lines,
)

__all__ = [
    "EXCERPT",
    "MAX_ROW_BYTES",
    "READERS",
    "SUPPORTED",
    "Loaded",
    "ReadOptions",
    "Reject",
    "Row",
    "iter_source",
    "load_source",
    "read_parallel",
    "read_rows",
    "reader_for",
]

SUPPORTED = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".xlsx", ".parquet", ".conll", ".label", ".txt", ".md")
READERS = ("jsonl", "json", "csv", "tsv", "parquet", "xlsx", "conll", "label", "txt")
MAX_ROW_BYTES = 64 * 2**20  # a longer line is rejected without being read into memory whole
# (read here at each call and passed down to the readers, so setting this module's attribute is enough)


def read_rows(
    path: str | Path, reader: str | None = None, options: ReadOptions | None = None
) -> tuple[list[Row], list[Reject], list[str]]:
    """Return (rows, rejects, columns) of a data source; raise DataError if it is unusable as a whole."""
    loaded = load_source(str(path), reader, options)
    if not loaded.rows:
        first = loaded.rejects[0] if loaded.rejects else None
        raise DataError(
            f"{path}: no usable rows ({len(loaded.rejects)} rejected; first: {first.source}: {first.reason})"
            if first
            else f"{path}: no rows"
        )
    return loaded.rows, loaded.rejects, loaded.columns


def load_source(spec: str, reader: str | None = None, options: ReadOptions | None = None) -> Loaded:
    """Like ``read_rows`` but an all-rejected source is returned, not raised (``data check`` reports it)."""
    rows: list[Row] = []
    rejects: list[Reject] = []
    for item in iter_source(spec, reader, options):
        (rows if isinstance(item, Row) else rejects).append(item)
    return Loaded(rows, rejects, _columns(rows))


def iter_source(spec: str, reader: str | None = None, options: ReadOptions | None = None) -> Iterator[Row | Reject]:
    """The rows of a data source in file order, and a ``Reject`` for each line that is not a usable row.

    Whole-file problems (missing, empty, binary, a wrong delimiter) raise ``DataError`` before the first row.
    """
    options = options or ReadOptions()
    if spec.startswith("hf:"):
        yield from read_hub(spec)
        return
    path = Path(spec)
    if not path.exists():
        raise DataError(
            f"data file not found: {path}\n  fix: check the path in data.train / data.validation / data.test "
            "(relative paths are relative to the config file)"
        )
    if path.is_dir():
        yield from read_folder(path)
        return
    kind = reader or reader_for(path)
    try:
        if kind == "parquet":
            yield from read_parquet(path)
            return
        if kind == "xlsx":
            yield from read_xlsx(path, options)
            return
        with open_binary(path) as handle:
            check_text(path, handle.read(8192))
        if kind == "json":  # one JSON document: parsed whole
            yield from read_json(path, decode(path, read_all(path)))
            return
        lines = stream_lines(path, MAX_ROW_BYTES)
        header = options.header is not False
        if kind == "txt" and reader is None and path.name.lower().removesuffix(".gz").endswith(".txt"):
            head = stream_lines(path, MAX_ROW_BYTES)
            try:
                delimiter, sample = sniff_delimiter(head)
            finally:
                head.close()
            if delimiter is not None:
                kind = "tsv" if delimiter == "\t" else "csv"
                if options.header is None:
                    header = guess_header(sample, delimiter, frozenset(options.column_names))
        if kind == "jsonl":
            yield from read_jsonl(path, lines, MAX_ROW_BYTES)
        elif kind in ("csv", "tsv"):
            yield from read_delimited(path, lines, "," if kind == "csv" else "\t", MAX_ROW_BYTES, header)
        elif kind == "conll":
            yield from read_conll(path, lines, MAX_ROW_BYTES, options.tag_column)
        else:
            yield from _LINE_READERS[kind](path, lines, MAX_ROW_BYTES)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None


def reader_for(path: Path) -> str:
    """The reader a file's name asks for (``.gz`` looks at the name inside)."""
    name = path.name.lower().removesuffix(".gz")
    suffix = Path(name).suffix
    by_suffix = {".ndjson": "jsonl", ".md": "txt", ".iob": "conll", ".bio": "conll"}
    kind = by_suffix.get(suffix, suffix.lstrip("."))
    if kind not in READERS:
        raise DataError(
            f"{path}: unsupported file type '{suffix or path.name}'; expected one of {', '.join(SUPPORTED)} "
            "(optionally .gz), a folder, or hf:NAME.\n  fix: rename the file or pass its reader (e.g. --format conll)"
        )
    return kind


def read_parallel(source: str | Path, target: str | Path) -> tuple[list[Row], list[Reject], list[str]]:
    """Two line-aligned text files (e.g. a sentence and its translation per line) as source/target rows."""
    sides = []
    for path in (Path(source), Path(target)):
        if not path.is_file():
            raise DataError(f"data file not found: {path}")
        with open_binary(path) as handle:
            check_text(path, handle.read(8192))
        sides.append(list(read_text_lines(path, stream_lines(path, MAX_ROW_BYTES), MAX_ROW_BYTES)))
    src_rows = [r for r in sides[0] if isinstance(r, Row)]
    targets = {r.line: r.values["text"] for r in sides[1] if isinstance(r, Row)}
    rows, rejects = [], [r for side in sides for r in side if isinstance(r, Reject)]
    for row in src_rows:
        if row.line in targets:
            rows.append(Row(row.line, {"source": row.values["text"], "target": targets.pop(row.line)}))
        else:
            rejects.append(
                Reject(f"{source}:{row.line}", f"no line {row.line} in {target}", row.values["text"][:EXCERPT])
            )
    rejects += [Reject(f"{target}:{n}", f"no line {n} in {source}", t[:EXCERPT]) for n, t in targets.items()]
    return rows, rejects, ["source", "target"]


def _columns(rows: list[Row]) -> list[str]:
    return list(dict.fromkeys(key for row in rows for key in row.values))


_LINE_READERS = {"label": read_label_lines, "txt": read_text_lines}
