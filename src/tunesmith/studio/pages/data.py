"""Data: open or upload a file of the workspace; `data check`'s problems grouped by kind with their lines, the detected
format and a token-length histogram; the label mask of the first rows (as `data preview`); the audit (likely label
errors, clusters, outliers, duplicates), saved beside the file where the Annotate page finds it."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request, UploadFile
from fastapi.responses import HTMLResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from tunesmith.core.config import DataConfig
from tunesmith.core.errors import DataError, TunesmithError
from tunesmith.core.fs import write_json
from tunesmith.studio.context import Studio, studio
from tunesmith.studio.layout import render
from tunesmith.studio.pages import Page
from tunesmith.studio.workspace import Workspace

router = APIRouter()
PREVIEW_ROWS = 3
SHOWN_PER_KIND = 200  # problems listed per kind; the counts cover all


@router.get("/data", response_class=HTMLResponse, include_in_schema=False)
def page(request: Request) -> str:
    return render(request, "data.html.j2", active="data")


@router.get("/api/data/files")
def files(ts: Studio = Depends(studio)) -> dict[str, Any]:
    return {"files": ts.workspace.data_files()}


@router.post("/api/data/upload")
async def upload(file: UploadFile, ts: Studio = Depends(studio)) -> dict[str, Any]:
    """Save an upload into ``uploads/`` (its own name, made unique); the size limit is enforced while it streams."""
    from tunesmith.jobs.files import clean_name

    folder = ts.workspace.uploads
    folder.mkdir(parents=True, exist_ok=True)
    name = clean_name(file.filename or "upload.jsonl")
    target = ts.workspace.path(folder / name, "upload")
    stem, suffix = name.split(".", 1) if "." in name else (name, "")
    n = 1
    while target.exists():
        target = folder / f"{stem}-{n}{'.' + suffix if suffix else ''}"
        n += 1
    temp = folder / f".{target.name}.part"
    try:
        with temp.open("wb") as out:
            while chunk := await file.read(2**20):
                out.write(chunk)
        os.replace(temp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    return {"file": ts.workspace.relative(target), "bytes": target.stat().st_size}


def _tokenizer(workspace: Workspace, model: str) -> tuple[Any, int | None]:
    from tunesmith.core.config import ModelConfig
    from tunesmith.data.check import context_length
    from tunesmith.data.render import ensure_chat_template
    from tunesmith.models.load import load_tokenizer
    from tunesmith.models.resolve import resolve_model

    name = workspace.model_name(model)
    resolved = resolve_model(name)
    tokenizer = load_tokenizer(ModelConfig(name=name), resolved)
    ensure_chat_template(tokenizer)
    return tokenizer, context_length(resolved.location)


def _data_config(path: Path, fmt: str) -> DataConfig:
    from tunesmith.data.load import READERS

    if fmt in ("", "auto"):
        return DataConfig(train=str(path))
    return DataConfig(train=str(path), **({"reader": fmt} if fmt in READERS else {"format": fmt}))


@router.get("/api/data/check")
def check(file: str, model: str = "", format: str = "", ts: Studio = Depends(studio)) -> dict[str, Any]:
    """`tunesmith data check`: every problem by kind with its line, the format, and token lengths with a model."""
    from tunesmith.data.check import check_file

    path = ts.workspace.path(file, "data file", must_exist=True)
    tokenizer, limit = _tokenizer(ts.workspace, model) if model.strip() else (None, None)
    result = check_file(str(path), _data_config(path, format), tokenizer, limit)
    out = result.to_dict()
    groups = []
    for kind, items in sorted(result.by_kind().items(), key=lambda kv: (kv[1][0].severity, kv[0])):
        shown = [{"line": p.line, "message": p.message.replace(str(path), file), "excerpt": p.excerpt} for p in items]
        groups.append(
            {"kind": kind, "severity": items[0].severity, "count": len(items), "problems": shown[:SHOWN_PER_KIND]}
        )
    out.pop("problems")
    return out | {"file": ts.workspace.relative(path), "groups": groups}


@router.get("/api/data/preview")
def preview(file: str, model: str, format: str = "", ts: Studio = Depends(studio)) -> dict[str, Any]:
    """The first training examples as the model sees them, trained tokens marked (`tunesmith data preview`)."""
    from tunesmith.core.config import TaskConfig
    from tunesmith.data.prepare import prepare_data
    from tunesmith.data.render import encode_chat

    path = ts.workspace.path(file, "data file", must_exist=True)
    if not model.strip():
        raise TunesmithError("the preview needs a model: its tokenizer and chat template decide what is trained")
    tokenizer, limit = _tokenizer(ts.workspace, model)
    try:
        chats = prepare_data(_data_config(path, format), TaskConfig(), seed=42).splits["train"][:PREVIEW_ROWS]
    except DataError as exc:
        raise DataError(str(exc).replace(str(path), file)) from None
    examples = []
    for chat in chats:
        encoded = encode_chat(chat, tokenizer, "assistant", limit)
        pieces = [{"text": text, "trained": trained} for text, trained in encoded.pieces(tokenizer)]
        examples.append({"source": chat.source.replace(str(path), file), "tokens": len(encoded.input_ids),
                         "trained": encoded.n_targets, "truncated": encoded.truncated, "pieces": pieces})  # fmt: skip
    return {"examples": examples}


class AuditRequest(BaseModel):
    file: str
    text_column: str = ""
    label_column: str = "label"


@router.post("/api/data/audit")
async def audit(body: AuditRequest, ts: Studio = Depends(studio)) -> dict[str, Any]:
    """`tunesmith data audit`, saved as ``FILE.audit.json``: the Annotate page then shows flagged rows first."""
    from tunesmith.curate.audit import audit_file

    path = ts.workspace.path(body.file, "data file", must_exist=True)
    report = await run_in_threadpool(audit_file, path, body.text_column or None, body.label_column)
    saved = path.with_name(path.name + ".audit.json")
    write_json(saved, report)
    query = urlencode({"file": ts.workspace.relative(path)})
    return report | {"file": ts.workspace.relative(path), "saved": ts.workspace.relative(saved),
                     "annotate": f"/annotate?{query}"}  # fmt: skip


PAGE = Page("data", "Data", router)
