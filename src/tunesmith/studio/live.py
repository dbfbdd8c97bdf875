"""A run's curve, live, as server-sent events: for a job, its metrics events from the jobs store (what its worker
publishes from metrics.jsonl as the run writes it); for a run made with the CLI, new lines of its metrics.jsonl.

Events: ``points`` (a list of ``{step, loss, lr, val_loss, elapsed_s}``), ``status`` (the job's status, step and
time left) and ``end`` when the run can log no more. Each ``points`` event's id is where the stream stands (the
event ``seq``, or the file offset), so a browser reconnecting with ``Last-Event-ID`` misses nothing.

Written by hand, a few lines, rather than with a library: the format is four field names, and FastAPI's own
``EventSourceResponse`` needs a newer FastAPI than tunesmith asks for.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from tunesmith.jobs.service import FINAL, events_after, get_job
from tunesmith.studio.context import OWNER, Studio
from tunesmith.studio.runs import RunView, job_view, progress

POLL_S = 0.3
KEEPALIVE_S = 15.0
POINT_KEYS = {"train_loss": "loss", "valid_loss": "val_loss", "loss": "loss", "val_loss": "val_loss", "lr": "lr"}


def point(row: dict[str, Any]) -> dict[str, Any]:
    """A metrics row (the file's names or the event's OpenAI names) as a curve point."""
    out: dict[str, Any] = {"step": row["step"], "elapsed_s": row.get("elapsed_s")}
    for key, name in POINT_KEYS.items():
        value = row.get(key)
        if isinstance(value, int | float):
            out[name] = value
    return out


def frame(event: str, data: Any, event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def stream(studio: Studio, view: RunView, request: Request, after: str | None) -> StreamingResponse:
    source = _job_frames(studio, view, request, after) if view.job else _file_frames(studio, view, request, after)
    headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
    return StreamingResponse(source, media_type="text/event-stream", headers=headers)


async def _job_frames(studio: Studio, view: RunView, request: Request, after: str | None) -> AsyncIterator[str]:
    assert view.job is not None
    job_id, seq = view.job["id"], int(after) if after and after.isdigit() else 0
    last_status: dict[str, Any] | None = None
    last_point: dict[str, Any] = {}
    quiet = 0.0
    while not await request.is_disconnected():
        job = await run_in_threadpool(get_job, studio.store, OWNER, job_id)
        rows = await run_in_threadpool(events_after, studio.store, OWNER, job_id, seq) or []
        if rows:
            seq = rows[-1]["seq"]
            points = [point(r["data"]) for r in rows if r["type"] == "metrics" and r.get("data")]
            if points:
                yield frame("points", points, str(seq))
                last_point, quiet = points[-1], 0.0
        if job is None:
            return
        status = await run_in_threadpool(_status, studio, job, last_point)
        if status != last_status:
            yield frame("status", status)
            last_status, quiet = status, 0.0
        if job["status"] in FINAL:
            yield frame("end", {"status": job["status"]})
            return
        quiet += POLL_S
        if quiet >= KEEPALIVE_S:  # a comment line keeps proxies from closing an idle stream
            yield ": keep-alive\n\n"
            quiet = 0.0
        await asyncio.sleep(POLL_S)


def _status(studio: Studio, job: dict[str, Any], last: dict[str, Any]) -> dict[str, Any]:
    view = job_view(studio, job)
    return {"status": job["status"], **progress(view, [last]), "error": (job.get("error") or {}).get("message")}


async def _file_frames(studio: Studio, view: RunView, request: Request, after: str | None) -> AsyncIterator[str]:
    assert view.dir is not None
    path: Path = view.dir / "metrics.jsonl"
    offset = int(after) if after and after.isdigit() else 0
    if not path.is_file():  # nothing logged yet; once it is, each batch of points brings its status
        yield frame("status", {"status": view.status, **progress(view, [])})
    idle = 0.0
    while not await request.is_disconnected():
        chunk = b""
        if path.is_file():
            if path.stat().st_size < offset:  # rewritten by a resumed run: read it again
                offset = 0
            with path.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
            chunk = chunk[: chunk.rfind(b"\n") + 1]  # whole lines only
        if chunk:
            offset += len(chunk)
            rows = [json.loads(line) for line in chunk.splitlines() if line.strip().startswith(b"{")]
            points = [point(r) for r in rows if isinstance(r.get("step"), int)]
            if points:
                yield frame("points", points, str(offset))
                last = [r for r in rows if isinstance(r.get("step"), int)][-1]
                yield frame("status", {"status": view.status, **progress(view, [last])})
            idle = 0.0
        elif view.status == "finished" or idle > 60:  # a finished run, or one nobody writes to any more
            yield frame("end", {"status": view.status})
            return
        idle += POLL_S
        await asyncio.sleep(POLL_S)
