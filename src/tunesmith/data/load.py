"""Read rows from data files, each with its line number; bad rows are rejected with a reason, never lost.

Supported: JSONL, JSON (an array of objects, an object holding one, or SQuAD's nested layout), CSV/TSV,
Parquet, ``.gz`` of any of those, CoNLL (token<TAB>tag lines, blank line between sentences), ``.label``
lines (``LABEL text``, as TREC), plain ``.txt`` (one row per line), a folder of ``.txt``/``.md`` files
(one row per file), a Hugging Face dataset saved with ``save_to_disk``, and a hub dataset named
``hf:NAME?name=CONFIG&split=SPLIT``.

Rows are streamed (``iter_source``): JSONL, CSV/TSV, CoNLL, ``.label`` and ``.txt`` are read a line at a time
(a line over ``MAX_ROW_BYTES`` is rejected unread), Parquet a record batch at a time, and Hugging Face datasets
through their memory-mapped Arrow files, so a file never has to fit in memory as a whole. Only a ``.json``
document (one JSON value) is parsed whole.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import json
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qs

from tunesmith.errors import DataError

SUPPORTED = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet", ".conll", ".label", ".txt", ".md")
READERS = ("jsonl", "json", "csv", "tsv", "parquet", "conll", "label", "txt")
EXCERPT = 120
MAX_ROW_BYTES = 64 * 2**20  # a longer line is rejected without being read into memory whole


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


@dataclass
class Loaded:
    rows: list[Row]
    rejects: list[Reject]
    columns: list[str]


def read_rows(path: str | Path, reader: str | None = None) -> tuple[list[Row], list[Reject], list[str]]:
    """Return (rows, rejects, columns) of a data source; raise DataError if it is unusable as a whole."""
    loaded = load_source(str(path), reader)
    if not loaded.rows:
        first = loaded.rejects[0] if loaded.rejects else None
        raise DataError(
            f"{path}: no usable rows ({len(loaded.rejects)} rejected; first: {first.source}: {first.reason})"
            if first
            else f"{path}: no rows"
        )
    return loaded.rows, loaded.rejects, loaded.columns


def load_source(spec: str, reader: str | None = None) -> Loaded:
    """Like ``read_rows`` but an all-rejected source is returned, not raised (``data check`` reports it)."""
    rows: list[Row] = []
    rejects: list[Reject] = []
    for item in iter_source(spec, reader):
        (rows if isinstance(item, Row) else rejects).append(item)
    return Loaded(rows, rejects, _columns(rows))


def iter_source(spec: str, reader: str | None = None) -> Iterator[Row | Reject]:
    """The rows of a data source in file order, and a ``Reject`` for each line that is not a usable row.

    Whole-file problems (missing, empty, binary, a wrong delimiter) raise ``DataError`` before the first row.
    """
    if spec.startswith("hf:"):
        yield from _read_hub(spec)
        return
    path = Path(spec)
    if not path.exists():
        raise DataError(
            f"data file not found: {path}\n  fix: check the path in data.train / data.validation / data.test "
            "(relative paths are relative to the config file)"
        )
    if path.is_dir():
        yield from _read_folder(path)
        return
    kind = reader or reader_for(path)
    try:
        if kind == "parquet":
            yield from _read_parquet(path)
            return
        with _open_binary(path) as handle:
            _check_text(path, handle.read(8192))
        if kind == "json":  # one JSON document: parsed whole
            yield from _read_json(path, _decode(path, _read_all(path)))
            return
        lines = _stream_lines(path)
        if kind == "jsonl":
            yield from _read_jsonl(path, lines)
        elif kind in ("csv", "tsv"):
            yield from _read_delimited(path, lines, "," if kind == "csv" else "\t")
        else:
            yield from _LINE_READERS[kind](path, lines)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None


def _read_all(path: Path) -> bytes:
    with _open_binary(path) as handle:
        return handle.read()


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


def _decode(path: Path, raw: bytes) -> str:
    _check_text(path, raw[:8192])
    # Bad bytes become lone surrogates so the rows around them survive; rows holding them are rejected.
    return raw.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")


def _check_text(path: Path, head: bytes) -> None:
    """Refuse an empty file or one that is not text, judged from its first bytes."""
    if not head.strip():
        raise DataError(f"{path}: the file is empty; it needs at least one example")
    if b"\x00" in head or sum(b < 9 or 13 < b < 32 for b in head) > len(head) // 10:
        raise DataError(
            f"{path}: this looks like a binary file, not text (NUL or control bytes near the start); "
            "expected UTF-8 text in the format its name says"
        )


def _open_binary(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else path.open("rb")


def _stream_lines(path: Path) -> Iterator[tuple[int, str | None, int]]:
    """(line number, text, size in bytes) per line; text is None for a line over MAX_ROW_BYTES (skipped unread)."""
    with _open_binary(path) as handle:
        number = 0
        while chunk := handle.readline(MAX_ROW_BYTES + 1):
            number += 1
            size = len(chunk)
            if size > MAX_ROW_BYTES:
                while chunk and not chunk.endswith(b"\n"):  # skip the rest of the line in bounded pieces
                    chunk = handle.readline(MAX_ROW_BYTES)
                    size += len(chunk)
                yield number, None, size
                continue
            text = chunk.decode("utf-8", errors="surrogateescape").rstrip("\r\n")
            yield number, text.removeprefix("\ufeff") if number == 1 else text, size


_SURROGATE = re.compile("[\udc80-\udcff]")


def _bad_utf8(text: str) -> int | None:
    """Index of the first undecodable byte in ``text`` (decoded with surrogateescape), or None."""
    if text.isascii():
        return None
    found = _SURROGATE.search(text)
    return found.start() if found else None


def _utf8_reject(path: Path, number: int, line: str) -> Reject:
    col = _bad_utf8(line)
    return Reject(
        f"{path}:{number}",
        f"not valid UTF-8 (byte at column {(col or 0) + 1}); re-save the file as UTF-8",
        line.encode("utf-8", "surrogateescape").decode("utf-8", "replace")[:EXCERPT],
        kind="invalid_utf8",
    )


Lines = Iterable[tuple[int, str | None, int]]
RowStream = Iterator[Row | Reject]


def _too_long(path: Path, number: int, size: int) -> Reject:
    return Reject(
        f"{path}:{number}",
        f"the line is {size:,} bytes; a row may be at most {MAX_ROW_BYTES:,} bytes",
        "",
        kind="line_too_long",
    )


def _read_jsonl(path: Path, lines: Lines) -> RowStream:
    for number, line, size in lines:
        if line is None:
            yield _too_long(path, number, size)
            continue
        if not line or line.isspace():
            continue
        if _bad_utf8(line) is not None:
            yield _utf8_reject(path, number, line)
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            hint = (
                "; the file looks like one JSON document, name it .json" if number == 1 and line.strip() in "[{" else ""
            )
            yield Reject(
                f"{path}:{number}",
                f"malformed JSON: {exc.msg} at column {exc.colno}{hint}",
                line[:EXCERPT],
                kind="malformed_json",
            )
            continue
        if not isinstance(value, dict):
            yield Reject(
                f"{path}:{number}",
                f"expected a JSON object, got {type(value).__name__}",
                line[:EXCERPT],
                kind="not_an_object",
            )
            continue
        yield Row(number, value)


def _read_json(path: Path, text: str) -> RowStream:
    if _bad_utf8(text) is not None:
        line = text[: _bad_utf8(text)].count("\n") + 1
        raise DataError(f"{path}:{line}: not valid UTF-8; re-save the file as UTF-8")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        hint = ""
        if exc.msg == "Extra data":
            hint = "; it looks like JSON lines (one object per line): name it .jsonl"
        raise DataError(f"{path}:{exc.lineno}: malformed JSON: {exc.msg}{hint}") from None
    if isinstance(value, dict) and _is_squad(value):
        yield from _squad_rows(value)
        return
    if isinstance(value, dict):
        lists = [v for v in value.values() if isinstance(v, list)]
        if len(lists) == 1:
            value = lists[0]
    if not isinstance(value, list):
        raise DataError(f"{path}: expected a JSON array of objects, got {type(value).__name__}")
    for index, item in enumerate(value):
        if isinstance(item, dict):
            yield Row(index + 1, item)  # for a JSON array, "line" is the 1-based item index
        else:
            yield Reject(
                f"{path}:item {index + 1}",
                f"expected an object, got {type(item).__name__}",
                str(item)[:EXCERPT],
                kind="not_an_object",
            )


def _is_squad(value: dict[str, Any]) -> bool:
    data = value.get("data")
    return isinstance(data, list) and bool(data) and isinstance(data[0], dict) and "paragraphs" in data[0]


def _squad_rows(value: dict[str, Any]) -> list[Row]:
    """SQuAD's article > paragraph > question nesting, flattened to one row per question."""
    rows = []
    for article in value["data"]:
        for paragraph in article.get("paragraphs", []):
            for qa in paragraph.get("qas", []):
                values = {
                    "id": qa.get("id"),
                    "title": article.get("title"),
                    "context": paragraph.get("context"),
                    "question": qa.get("question"),
                    "answers": [a.get("text") for a in qa.get("answers", [])],
                    "answer_starts": [a.get("answer_start") for a in qa.get("answers", [])],
                }
                rows.append(Row(len(rows) + 1, values))
    return rows


def _read_delimited(path: Path, lines: Lines, delimiter: str) -> RowStream:
    # A line over the limit reaches the csv parser as an empty line (skipped) and is rejected in its place.
    too_long: list[tuple[int, int]] = []

    def texts() -> Iterator[str]:
        for number, text, size in lines:
            if text is None:
                too_long.append((number, size))
                text = ""
            yield text + "\n"

    # QUOTE_NONE for TSV: GLUE-style TSVs contain bare quotes that are part of the text.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    csv.field_size_limit(max(csv.field_size_limit(), MAX_ROW_BYTES))  # a field may be as long as a row
    reader = csv.reader(texts(), delimiter=delimiter, quoting=quoting)
    try:
        header = next(reader, None)
        if not header:
            raise DataError(f"{path}: no header row")
        header = [h.strip() for h in header]
        _check_delimiter(path, header, delimiter)
        for cells in reader:
            number = reader.line_num
            while too_long and too_long[0][0] <= number:
                yield _too_long(path, *too_long.pop(0))
            if not any(c.strip() for c in cells):
                continue
            joined = delimiter.join(cells)
            if _bad_utf8(joined) is not None:
                yield _utf8_reject(path, number, joined)
                continue
            if len(cells) != len(header):
                yield Reject(
                    f"{path}:{number}",
                    f"expected {len(header)} fields ({', '.join(header)}), got {len(cells)}",
                    joined[:EXCERPT],
                    kind="wrong_field_count",
                )
                continue
            yield Row(number, dict(zip(header, cells, strict=True)))
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: not valid {'CSV' if delimiter == ',' else 'TSV'}: {exc}") from None
    for number, size in too_long:
        yield _too_long(path, number, size)


def _check_delimiter(path: Path, header: list[str], delimiter: str) -> None:
    """A one-column header holding another delimiter means the file is not what its name says."""
    if len(header) != 1:
        return
    for other, name in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe"), (",", "comma")):
        if other != delimiter and other in header[0]:
            expected = "comma" if delimiter == "," else "tab"
            raise DataError(
                f"{path}:1: the header is one column {header[0][:60]!r} that contains {name}s; "
                f"expected {expected}-separated columns.\n  fix: re-save the file with {expected}s"
                + (" or name it .tsv" if other == "\t" else "")
            )


def _read_conll(path: Path, lines: Lines) -> RowStream:
    """One token per line with its tag in the last column; a blank line ends a sentence."""
    tokens: list[str] = []
    tags: list[str] = []
    start = 0
    bad: Reject | None = None
    last = 0
    for number, line, size in itertools.chain(lines, [(0, "", 0)]):  # a final blank line ends the last sentence
        number = number or last + 1
        last = number
        if line is not None and not line.strip():
            if bad:
                yield bad
            elif tokens:
                yield Row(start, {"tokens": tokens, "tags": tags})
            tokens, tags, bad = [], [], None
            continue
        if line is not None and line.startswith("-DOCSTART-"):
            continue
        if not tokens and bad is None:
            start = number
        if line is None:
            bad = bad or _too_long(path, number, size)
            continue
        if _bad_utf8(line) is not None:
            bad = bad or _utf8_reject(path, number, line)
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) < 2:
            bad = bad or Reject(
                f"{path}:{number}", "expected 'token<TAB>tag' on a line", line[:EXCERPT], kind="wrong_field_count"
            )
            continue
        tokens.append(parts[0])
        tags.append(parts[-1].strip())


def _read_label_lines(path: Path, lines: Lines) -> RowStream:
    """``LABEL text`` per line (TREC, fastText's ``__label__x text``)."""
    for number, line, size in lines:
        if line is None:
            yield _too_long(path, number, size)
            continue
        if not line.strip():
            continue
        if _bad_utf8(line) is not None:
            yield _utf8_reject(path, number, line)
            continue
        label, _, rest = line.strip().partition(" ")
        if not rest.strip():
            yield Reject(f"{path}:{number}", "expected 'LABEL text' on a line", line[:EXCERPT], kind="empty_text")
            continue
        yield Row(number, {"label": label.removeprefix("__label__"), "text": rest.strip()})


def _read_text_lines(path: Path, lines: Lines) -> RowStream:
    for number, line, size in lines:
        if line is None:
            yield _too_long(path, number, size)
        elif not line.strip():
            continue
        elif _bad_utf8(line) is not None:
            yield _utf8_reject(path, number, line)
        else:
            yield Row(number, {"text": line})


def read_parallel(source: str | Path, target: str | Path) -> tuple[list[Row], list[Reject], list[str]]:
    """Two line-aligned text files (e.g. a sentence and its translation per line) as source/target rows."""
    sides = []
    for path in (Path(source), Path(target)):
        if not path.is_file():
            raise DataError(f"data file not found: {path}")
        with _open_binary(path) as handle:
            _check_text(path, handle.read(8192))
        sides.append(list(_read_text_lines(path, _stream_lines(path))))
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


def _read_folder(path: Path) -> RowStream:
    if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
        yield from _read_saved_dataset(path)
        return
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in (".txt", ".md"))
    if not files:
        raise DataError(f"{path}: a folder needs .txt/.md files or a Hugging Face dataset saved with save_to_disk")
    for file in files:
        text = _decode(file, file.read_bytes()) if file.stat().st_size else ""
        if text.strip() and _bad_utf8(text) is None:
            yield Row(1, {"text": text}, file=str(file))


def _dataset_rows(dataset: Any, batch_size: int = 1000) -> RowStream:
    """Rows of a ``datasets.Dataset``, read a batch at a time from its memory-mapped Arrow files."""
    number = 0
    for batch in dataset.iter(batch_size=batch_size):
        for values in zip(*batch.values(), strict=True):
            number += 1
            yield Row(number, dict(zip(batch, values, strict=True)))


def _read_saved_dataset(path: Path) -> RowStream:
    import datasets

    dataset = datasets.load_from_disk(str(path))
    if isinstance(dataset, datasets.DatasetDict):
        raise DataError(
            f"{path}: holds a DatasetDict with splits {', '.join(dataset)}; point at one split's folder, "
            f"e.g. {path / next(iter(dataset))}"
        )
    yield from _dataset_rows(dataset)


def _read_hub(spec: str) -> RowStream:
    """``hf:NAME?name=CONFIG&split=SPLIT`` through ``datasets.load_dataset`` (honours HF_HUB_OFFLINE)."""
    import datasets

    name, _, query = spec.removeprefix("hf:").partition("?")
    options = {k: v[-1] for k, v in parse_qs(query).items()}
    split = options.pop("split", "train")
    try:
        dataset = datasets.load_dataset(name, options.pop("name", None), split=split, **options)
    except Exception as exc:  # the hub raises many kinds; all mean the same to a user
        raise DataError(f"{spec}: could not load the Hugging Face dataset: {exc}") from None
    yield from _dataset_rows(dataset)


def _read_parquet(path: Path) -> RowStream:
    """A record batch at a time (a ``.parquet.gz`` is decompressed in memory first)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        source = pa.BufferReader(_read_all(path)) if path.suffix.lower() == ".gz" else path
        batches = pq.ParquetFile(source).iter_batches(batch_size=10_000)
        number = 0
        for batch in batches:
            for values in batch.to_pylist():
                number += 1
                yield Row(number, values)
    except pa.ArrowException as exc:
        raise DataError(f"{path}: not a valid Parquet file ({exc})") from None


def _columns(rows: list[Row]) -> list[str]:
    return list(dict.fromkeys(key for row in rows for key in row.values))


_LINE_READERS = {"conll": _read_conll, "label": _read_label_lines, "txt": _read_text_lines}
