"""Runs: every run in the workspace with its status; a run's page streams its curves live (server-sent events from
the job's events), shows step, time left and the log, cancels, pauses and resumes it through the jobs service, and
shows a finished run's report and environment."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, HTMLResponse, StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from tunesmith.core.errors import TunesmithError
from tunesmith.jobs.service import FINAL, cancel_job, list_events, pause_job, resume_job
from tunesmith.studio import live
from tunesmith.studio.context import OWNER, Studio, studio
from tunesmith.studio.layout import render
from tunesmith.studio.pages import Page
from tunesmith.studio.runs import find_run, list_runs, log_tail, metrics_rows, progress

router = APIRouter()


@router.get("/runs", response_class=HTMLResponse, include_in_schema=False)
def page(request: Request, ts: Studio = Depends(studio)) -> str:
    runs = [view.summary() for view in list_runs(ts)]
    return render(request, "runs.html.j2", active="runs", runs=runs)


@router.get("/runs/view", response_class=HTMLResponse, include_in_schema=False)
def run_page(request: Request, key: str, ts: Studio = Depends(studio)) -> str:
    view = find_run(ts, key)
    return render(request, "run.html.j2", active="runs", run=view.summary())


@router.get("/api/runs/list")
def runs_list(trained: bool = False, ts: Studio = Depends(studio)) -> dict[str, Any]:
    """Every run (``trained``: only those with a model), for the pickers of other pages."""
    runs = [view.summary() for view in list_runs(ts)]
    return {"runs": [r for r in runs if r["trained"] or not trained]}


@router.get("/api/runs/detail")
def detail(key: str, ts: Studio = Depends(studio)) -> dict[str, Any]:
    """A run's status, progress, recent messages and log, and once finished its evaluation and environment."""
    view = find_run(ts, key)
    rows = metrics_rows(view.dir)
    messages: list[dict[str, Any]] = []
    if view.job:
        found = list_events(ts.store, OWNER, view.job["id"], None, 200) or ([], False)
        messages = [
            {"time": e["created_at"], "level": e["level"], "message": e["message"]}
            for e in found[0]
            if e["type"] != "metrics"
        ][:30]
    folder = view.dir
    status = view.status
    return {
        "run": view.summary(),
        "progress": progress(view, rows),
        "messages": messages,
        "log": log_tail(ts, view),
        "error": ((view.job or {}).get("error") or {}).get("message"),
        "actions": _actions(status, bool(view.job)),
        "report": bool(folder and (folder / "report.html").is_file()),
        "environment": live_json(folder / "environment.json") if folder else None,
        "metrics": live_json(folder / "eval" / "metrics.json") if folder else None,
        "folder": ts.workspace.relative(folder) if folder else None,
    }


def _actions(status: str, is_job: bool) -> list[str]:
    if not is_job or status in FINAL:
        return []
    return {"running": ["pause", "cancel"], "paused": ["resume", "cancel"]}.get(status, ["cancel"])


def live_json(path: Any) -> Any:
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@router.get("/api/runs/stream", include_in_schema=False)
def stream(request: Request, key: str, ts: Studio = Depends(studio)) -> StreamingResponse:
    """Server-sent events: the run's curve points as they are logged, its status, and ``end``."""
    after = request.headers.get("last-event-id") or request.query_params.get("after")
    return live.stream(ts, find_run(ts, key), request, after)


class Action(BaseModel):
    key: str
    action: Literal["cancel", "pause", "resume"]


@router.post("/api/runs/action")
async def act(body: Action, ts: Studio = Depends(studio)) -> dict[str, Any]:
    """Cancel, pause or resume a job (returns once the worker has stopped its run)."""
    view = await run_in_threadpool(find_run, ts, body.key)
    if view.job is None:
        raise TunesmithError(f"{view.name} was started with the CLI, not by the studio: stop it where it runs")
    verb = {"cancel": cancel_job, "pause": pause_job, "resume": resume_job}[body.action]
    job = await run_in_threadpool(verb, ts.store, OWNER, view.job["id"])
    return {"status": job["status"] if job else None}


@router.get("/api/runs/report", include_in_schema=False)
def report(key: str, ts: Studio = Depends(studio)) -> FileResponse:
    """The run's report.html, sandboxed: its scripts cannot reach the studio's API."""
    view = find_run(ts, key)
    path = view.dir / "report.html" if view.dir else None
    if path is None or not path.is_file():
        raise TunesmithError(f"{view.name} has no report yet (it is written when the run finishes)")
    return FileResponse(path, media_type="text/html", headers={"content-security-policy": "sandbox allow-scripts"})


PAGE = Page("runs", "Runs", router)
