"""Uploaded files: stored under ``<home>/files/<id>.jsonl`` (never under the name the client sent), written
atomically (a temp file renamed into place, the row inserted only after), and validated with the rules of
`tunesmith data check` so a file's status says ``processed`` or ``error`` with its problems by line."""

from __future__ import annotations

import contextlib
import os
import time
import unicodedata
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tunesmith.jobs.db import new_id, now
from tunesmith.jobs.tables import files

TEMP_PREFIX = ".upload-"
SHOWN_PROBLEMS = 20  # problems spelled out in status_details; the rest are counted
STORED_PROBLEMS = 1000  # problems kept with the file's row


class Files:
    """The files of every owner; each method is scoped to one owner."""

    def __init__(self, engine: Any, folder: Path) -> None:
        self.engine, self.folder = engine, folder
        folder.mkdir(parents=True, exist_ok=True)

    def temp_path(self) -> Path:
        """A fresh temp file name in the files folder (same filesystem: the rename into place is atomic)."""
        return self.folder / f"{TEMP_PREFIX}{os.getpid()}-{new_id('f')}.tmp"

    def path(self, file_id: str) -> Path:
        return self.folder / f"{file_id}.jsonl"

    def add(self, owner: str, filename: str, purpose: str, temp: Path) -> dict[str, Any]:
        """Move a complete upload into place, validate it and record it; the new row."""
        file_id = new_id("file")
        final = self.path(file_id)
        with temp.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, final)
        status, details, check = validate(final, clean_name(filename))
        row = {
            "id": file_id,
            "owner": owner,
            "filename": clean_name(filename),
            "purpose": purpose,
            "bytes": final.stat().st_size,
            "created_at": now(),
            "status": status,
            "status_details": details,
            "check": check,
        }
        with self.engine.begin() as connection:
            connection.execute(files.insert().values(**row))
        return row

    def get(self, owner: str, file_id: str) -> dict[str, Any] | None:
        query = files.select().where(files.c.id == file_id, files.c.owner == owner, files.c.deleted_at.is_(None))
        with self.engine.connect() as connection:
            row = connection.execute(query).mappings().first()
        return dict(row) if row else None

    def list(
        self, owner: str, after: str | None, limit: int, order: str, purpose: str | None
    ) -> tuple[list[dict[str, Any]], bool]:
        """One page, newest first (``order="desc"``) or oldest first; has_more."""
        query = files.select().where(files.c.owner == owner, files.c.deleted_at.is_(None))
        if purpose:
            query = query.where(files.c.purpose == purpose)
        key = (files.c.created_at, files.c.id)
        if after:
            cursor = self.get(owner, after)
            if cursor is not None:
                mark = sa.tuple_(*key)
                pair = sa.tuple_(sa.literal(cursor["created_at"]), sa.literal(cursor["id"]))
                query = query.where(mark < pair if order == "desc" else mark > pair)
        query = query.order_by(*(k.desc() if order == "desc" else k.asc() for k in key)).limit(limit + 1)
        with self.engine.connect() as connection:
            rows = [dict(r) for r in connection.execute(query).mappings()]
        return rows[:limit], len(rows) > limit

    def delete(self, owner: str, file_id: str) -> bool:
        update = (
            files.update()
            .where(files.c.id == file_id, files.c.owner == owner, files.c.deleted_at.is_(None))
            .values(deleted_at=now())
        )
        with self.engine.begin() as connection:
            deleted = connection.execute(update).rowcount == 1
        if deleted:
            self.path(file_id).unlink(missing_ok=True)
        return deleted

    def clean_temps(self, older_than: float = 3600.0) -> None:
        """Remove uploads a killed server left half-written (never listed: their row was never inserted)."""
        for temp in self.folder.glob(f"{TEMP_PREFIX}*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                if time.time() - temp.stat().st_mtime > older_than:
                    temp.unlink()


def clean_name(filename: str) -> str:
    """The client's file name as a label only: its last path part, printable, at most 255 characters."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip()
    return (name or "upload.jsonl")[:255]


def validate(path: Path, filename: str) -> tuple[str, str | None, dict[str, Any]]:
    """``(status, status_details, check)``: ``error`` when any row is unusable, each problem named by line."""
    from tunesmith.data.check import check_file

    result = check_file(str(path))
    check = result.to_dict()
    check["file"] = filename
    for problem in check["problems"]:
        problem["source"] = f"{filename}:{problem['line']}"
        problem["message"] = problem["message"].replace(str(path), filename)
    problems = check["problems"]
    check["problems"] = problems[:STORED_PROBLEMS]  # the counts stay whole; the row stays small
    if not problems:
        return "processed", None, check
    shown = [f"line {p['line']}: {p['message']}" for p in problems[:SHOWN_PROBLEMS]]
    more = len(problems) - len(shown)
    tail = f"; and {more} more" if more else ""
    if result.errors or not result.valid_rows:
        head = f"{len(result.errors)} of {result.rows} rows cannot be used ({result.format or 'unknown'} format)"
        if not result.valid_rows and not result.errors:
            head = "no usable rows"
        return "error", f"{head}: {'; '.join(shown)}{tail}", check
    return "processed", f"{len(problems)} warnings: {'; '.join(shown)}{tail}", check
