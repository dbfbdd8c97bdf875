"""Ship: export a finished run (verified: the written folder loaded back and its logits compared with the run's
model; the checks shown) and start or stop serving it (an OpenAI-compatible endpoint on this machine)."""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from tunesmith.studio.context import Studio, studio
from tunesmith.studio.layout import render
from tunesmith.studio.pages import Page
from tunesmith.studio.runs import trained_run
from tunesmith.studio.serving import Servers

router = APIRouter()


def servers(ts: Studio) -> Servers:
    return ts.extra("servers", lambda: Servers(ts.workspace.scratch / "serve"))


@router.get("/ship", response_class=HTMLResponse, include_in_schema=False)
def page(request: Request) -> str:
    return render(request, "ship.html.j2", active="ship")


class ExportRequest(BaseModel):
    key: str
    merge: bool = False
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    gguf: Literal["", "f16", "q8_0"] = ""
    force: bool = False


@router.post("/api/ship/export")
def export(body: ExportRequest, ts: Studio = Depends(studio)) -> dict[str, Any]:
    """`tunesmith export` into ``exports/<run>-<kind>-<time>``; the checks it made and the gate, if any."""
    from tunesmith.pipeline.trained import TrainedRun
    from tunesmith.ship.export import export_kind, export_run

    view = trained_run(ts, body.key)
    run = TrainedRun.from_dir(view.dir)  # type: ignore[arg-type]
    kind = export_kind(run.config.method.name, body.merge or bool(body.gguf))
    out = ts.workspace.path(ts.workspace.exports / f"{view.name}-{kind}-{time.strftime('%Y%m%d-%H%M%S')}", "export")
    out.parent.mkdir(parents=True, exist_ok=True)
    result = export_run(run, out, merge=body.merge, dtype=body.dtype, gguf=body.gguf or None, force=body.force)
    return {
        "out": ts.workspace.relative(result.out),
        "kind": result.kind,
        "dtype": result.dtype,
        "max_logit_diff": result.max_logit_diff,
        "checks": result.checks,
        "gguf": ts.workspace.relative(result.gguf) if result.gguf else None,
        "gate": result.gate,
        "files": sorted(p.name for p in result.out.iterdir()),
    }


class ServeRequest(BaseModel):
    key: str
    force: bool = False


@router.post("/api/ship/serve")
def serve(body: ServeRequest, ts: Studio = Depends(studio)) -> dict[str, Any]:
    """Serve a finished run on a free loopback port (`tunesmith serve RUN`); ready once it answers /health."""
    view = trained_run(ts, body.key)
    return servers(ts).start(view.key, view.name, view.dir, body.force).describe()  # type: ignore[arg-type]


class StopRequest(BaseModel):
    id: int


@router.post("/api/ship/stop")
def stop(body: StopRequest, ts: Studio = Depends(studio)) -> dict[str, Any]:
    return servers(ts).stop(body.id).describe()


@router.get("/api/ship/servers")
def served(ts: Studio = Depends(studio)) -> dict[str, Any]:
    return {"servers": servers(ts).list()}


PAGE = Page("ship", "Ship", router)
