"""Annotate: review labels row by row, most needed first, with the keyboard; every change saved with a trail.
Every file it opens (the data, the audit, a second annotator's copy) is a file of the workspace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from tunesmith.core.errors import DataError
from tunesmith.core.fs import read_json
from tunesmith.data.labelfile import LabelSet
from tunesmith.studio.context import Studio, studio
from tunesmith.studio.layout import render
from tunesmith.studio.pages import Page
from tunesmith.studio.store import Change, agreement_with_file, apply_change, load_rows
from tunesmith.studio.workspace import Workspace

router = APIRouter()


@router.get("/annotate", response_class=HTMLResponse, include_in_schema=False)
def page(request: Request) -> str:
    return render(request, "annotate.html.j2", active="annotate")


@router.get("/api/annotate/rows")
def rows(
    file: str, labels: str = "", audit: str = "", text_column: str = "", ts: Studio = Depends(studio)
) -> dict[str, Any]:
    """The file's rows ordered by need, its label set, progress and agreement between annotators."""
    path = _path(ts.workspace, file)
    found = load_rows(path, _labels(labels), _audit(ts.workspace, path, audit), text_column or None)
    return found | {"audit": _audit_name(ts.workspace, path, audit)}


class Save(BaseModel):
    file: str
    row: int = Field(ge=0)
    text_hash: str
    expected: str | None  # the label shown when the person chose
    label: str
    annotator: str = "annotator"
    labels: str = ""
    text_column: str = ""


@router.post("/api/annotate/label")
def save(body: Save, ts: Studio = Depends(studio)) -> dict[str, Any]:
    """Set one row's label (409 with a message if someone changed that row since it was shown)."""
    path = _path(ts.workspace, body.file)
    labels = _labels(body.labels) or LabelSet.parse(load_rows(path, None, None, body.text_column or None)["labels"])
    change = Change(body.row, body.text_hash, body.expected, body.label, body.annotator)
    return {"saved": apply_change(path, labels, change, body.text_column or None)}


@router.get("/api/annotate/agreement")
def agreement(file: str, other: str, text_column: str = "", ts: Studio = Depends(studio)) -> dict[str, Any]:
    """Cohen's kappa between this file's labels and a second annotator's file (rows matched by text)."""
    return agreement_with_file(_path(ts.workspace, file), _path(ts.workspace, other), text_column or None)


def _path(workspace: Workspace, file: str) -> Path:
    if not file.strip():
        raise DataError("no file given: type the path of a data file (JSONL, JSON, CSV or TSV) and press Open")
    return workspace.path(file, "data file")


def _labels(spec: str) -> LabelSet | None:
    return LabelSet.parse(spec) if spec.strip() else None


def _audit_name(workspace: Workspace, path: Path, audit: str) -> str | None:
    """The audit used: the one named, else ``FILE.audit.json`` beside the file (``data audit FILE --save ...``)."""
    if audit.strip():
        return workspace.relative(workspace.path(audit, "audit file"))
    beside = path.with_name(path.name + ".audit.json")
    return workspace.relative(beside) if beside.is_file() else None


def _audit(workspace: Workspace, path: Path, audit: str) -> dict[str, Any] | None:
    name = _audit_name(workspace, path, audit)
    if name is None:
        return None
    found = workspace.path(name, "audit file")
    if not found.is_file():
        fix = f"make it with `tunesmith data audit {workspace.relative(path)} --save {name}` (or on the Data page)"
        raise DataError(f"audit file not found: {name}\n  fix: {fix}")
    return read_json(found)


PAGE = Page("annotate", "Annotate", router)
