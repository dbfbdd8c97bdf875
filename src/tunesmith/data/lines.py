"""A data file's bytes as text: opened (``.gz`` too), refused if empty or binary, streamed as bounded lines.

Undecodable bytes become lone surrogates (``surrogateescape``) so the rows around them survive; ``bad_utf8`` finds
them and ``utf8_reject`` turns such a line into a reject. The longest line read is a ``limit`` the caller passes
(``tunesmith.data.load.MAX_ROW_BYTES``); a longer one is skipped unread and rejected with ``too_long``.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from tunesmith.core.errors import DataError
from tunesmith.data.rows import EXCERPT, Reject

Lines = Iterable[tuple[int, str | None, int]]


def read_all(path: Path) -> bytes:
    with open_binary(path) as handle:
        return handle.read()


def decode(path: Path, raw: bytes) -> str:
    check_text(path, raw[:8192])
    # Bad bytes become lone surrogates so the rows around them survive; rows holding them are rejected.
    return raw.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")


def check_text(path: Path, head: bytes) -> None:
    """Refuse an empty file or one that is not text, judged from its first bytes."""
    if not head.strip():
        raise DataError(f"{path}: the file is empty; it needs at least one example")
    if b"\x00" in head or sum(b < 9 or 13 < b < 32 for b in head) > len(head) // 10:
        raise DataError(
            f"{path}: this looks like a binary file, not text (NUL or control bytes near the start); "
            "expected UTF-8 text in the format its name says"
        )


def open_binary(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else path.open("rb")


def stream_lines(path: Path, limit: int) -> Iterator[tuple[int, str | None, int]]:
    """(line number, text, size in bytes) per line; text is None for a line over ``limit`` (skipped unread)."""
    with open_binary(path) as handle:
        number = 0
        while chunk := handle.readline(limit + 1):
            number += 1
            size = len(chunk)
            if size > limit:
                while chunk and not chunk.endswith(b"\n"):  # skip the rest of the line in bounded pieces
                    chunk = handle.readline(limit)
                    size += len(chunk)
                yield number, None, size
                continue
            text = chunk.decode("utf-8", errors="surrogateescape").rstrip("\r\n")
            yield number, text.removeprefix("\ufeff") if number == 1 else text, size


_SURROGATE = re.compile("[\udc80-\udcff]")


def bad_utf8(text: str) -> int | None:
    """Index of the first undecodable byte in ``text`` (decoded with surrogateescape), or None."""
    if text.isascii():
        return None
    found = _SURROGATE.search(text)
    return found.start() if found else None


def utf8_reject(path: Path, number: int, line: str) -> Reject:
    col = bad_utf8(line)
    return Reject(
        f"{path}:{number}",
        f"not valid UTF-8 (byte at column {(col or 0) + 1}); re-save the file as UTF-8",
        line.encode("utf-8", "surrogateescape").decode("utf-8", "replace")[:EXCERPT],
        kind="invalid_utf8",
    )


def too_long(path: Path, number: int, size: int, limit: int) -> Reject:
    return Reject(
        f"{path}:{number}",
        f"the line is {size:,} bytes; a row may be at most {limit:,} bytes",
        "",
        kind="line_too_long",
    )
