"""Readers of the text formats, one function each: JSON lines, a JSON document (SQuAD's nesting too), CSV/TSV,
CoNLL, ``.label`` lines and plain text lines.

Each takes the file's streamed ``lines`` (``tunesmith.data.lines.stream_lines``) and the ``limit`` they were read
with, and yields a ``Row`` per usable row and a ``Reject`` per line that is not one, in file order; only
``read_json`` takes the whole document's text.
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tunesmith.core.errors import DataError
from tunesmith.data.lines import Lines, bad_utf8, too_long, utf8_reject
from tunesmith.data.rows import EXCERPT, Reject, Row, RowStream


def read_jsonl(path: Path, lines: Lines, limit: int) -> RowStream:
    for number, line, size in lines:
        if line is None:
            yield too_long(path, number, size, limit)
            continue
        if not line or line.isspace():
            continue
        if bad_utf8(line) is not None:
            yield utf8_reject(path, number, line)
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


def read_json(path: Path, text: str) -> RowStream:
    if bad_utf8(text) is not None:
        line = text[: bad_utf8(text)].count("\n") + 1
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


def read_delimited(path: Path, lines: Lines, delimiter: str, limit: int, header: bool = True) -> RowStream:
    """CSV/TSV rows as dicts by the header's names, or by position ("0", "1", ...) when there is no header."""
    # A line over the limit reaches the csv parser as an empty line (skipped) and is rejected in its place.
    overlong: list[tuple[int, int]] = []

    def texts() -> Iterator[str]:
        for number, text, size in lines:
            if text is None:
                overlong.append((number, size))
                text = ""
            yield text + "\n"

    # QUOTE_NONE for TSV: GLUE-style TSVs contain bare quotes that are part of the text.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    csv.field_size_limit(max(csv.field_size_limit(), limit))  # a field may be as long as a row
    reader = csv.reader(texts(), delimiter=delimiter, quoting=quoting)
    try:
        names: list[str] | None = None
        if header:
            names = next(reader, None)
            if not names:
                raise DataError(f"{path}: no header row")
            names = [h.strip() for h in names]
            _check_delimiter(path, names, delimiter)
        for cells in reader:
            number = reader.line_num
            while overlong and overlong[0][0] <= number:
                yield too_long(path, *overlong.pop(0), limit)
            if not any(c.strip() for c in cells):
                continue
            joined = delimiter.join(cells)
            if bad_utf8(joined) is not None:
                yield utf8_reject(path, number, joined)
                continue
            if names is None:  # no header: the first row says how many columns there are
                names = [str(i) for i in range(len(cells))]
            if len(cells) != len(names):
                expected = f"({', '.join(names)})" if header else "(as the first row; the file has no header)"
                yield Reject(
                    f"{path}:{number}",
                    f"expected {len(names)} fields {expected}, got {len(cells)}",
                    joined[:EXCERPT],
                    kind="wrong_field_count",
                )
                continue
            yield Row(number, dict(zip(names, cells, strict=True)))
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: not valid {'CSV' if delimiter == ',' else 'TSV'}: {exc}") from None
    for number, size in overlong:
        yield too_long(path, number, size, limit)


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


def read_conll(path: Path, lines: Lines, limit: int, tag_column: int = -1) -> RowStream:
    """One token per line, tab- or space-separated columns, the tag in column ``tag_column`` (default the last);
    a blank line ends a sentence; ``-DOCSTART-`` lines (CoNLL-2003's document breaks) are skipped."""
    if tag_column == 0:
        raise DataError(f"{path}: data.tag_column 0 is the token column; give the position of the tags (e.g. -1)")
    tokens: list[str] = []
    tags: list[str] = []
    start = 0
    bad: Reject | None = None
    last = 0
    checked = False  # the first token line must have the tag column: otherwise the setting is wrong, not the row
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
            bad = bad or too_long(path, number, size, limit)
            continue
        if bad_utf8(line) is not None:
            bad = bad or utf8_reject(path, number, line)
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) < 2:
            bad = bad or Reject(
                f"{path}:{number}", "expected 'token<TAB>tag' on a line", line[:EXCERPT], kind="wrong_field_count"
            )
            continue
        if not -len(parts) <= tag_column < len(parts):
            if not checked:
                raise DataError(
                    f"{path}:{number}: data.tag_column is {tag_column} but the line has {len(parts)} columns "
                    f"(0 is the token); expected a position from 1 to {len(parts) - 1} or from -1 to -{len(parts) - 1}"
                )
            bad = bad or Reject(
                f"{path}:{number}",
                f"expected a tag in column {tag_column} (data.tag_column), got {len(parts)} columns",
                line[:EXCERPT],
                kind="wrong_field_count",
            )
            continue
        checked = True
        tokens.append(parts[0])
        tags.append(parts[tag_column].strip())


def read_label_lines(path: Path, lines: Lines, limit: int) -> RowStream:
    """``LABEL text`` per line (TREC, fastText's ``__label__x text``)."""
    for number, line, size in lines:
        if line is None:
            yield too_long(path, number, size, limit)
            continue
        if not line.strip():
            continue
        if bad_utf8(line) is not None:
            yield utf8_reject(path, number, line)
            continue
        label, _, rest = line.strip().partition(" ")
        if not rest.strip():
            yield Reject(f"{path}:{number}", "expected 'LABEL text' on a line", line[:EXCERPT], kind="empty_text")
            continue
        yield Row(number, {"label": label.removeprefix("__label__"), "text": rest.strip()})


def read_text_lines(path: Path, lines: Lines, limit: int) -> RowStream:
    for number, line, size in lines:
        if line is None:
            yield too_long(path, number, size, limit)
        elif not line.strip():
            continue
        elif bad_utf8(line) is not None:
            yield utf8_reject(path, number, line)
        else:
            yield Row(number, {"text": line})
