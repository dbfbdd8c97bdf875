"""OpenAI's files and fine-tuning API on the jobs store: /v1/files and /v1/fine_tuning/jobs (with events,
checkpoints, cancel, pause and resume), and DELETE /v1/models/{id} for fine-tuned models. Every route is scoped to
the caller's key: another key's file, job or model is a 404, as one that does not exist."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from tunesmith.jobs import service
from tunesmith.jobs.spec import JobRequestError
from tunesmith.jobs.store import Store
from tunesmith.server import objects
from tunesmith.server.ft_models import FineTunedModels
from tunesmith.server.http import APIError, not_found, read_json
from tunesmith.server.uploads import receive_upload

PURPOSES = ("fine-tune",)


@dataclass
class JobsFace:
    store: Store
    max_upload_bytes: int
    models: FineTunedModels


Owner = Callable[[Request], Awaitable[str]]


def add_job_routes(app: FastAPI, face: JobsFace, owner_of: Owner, body_limit: int) -> None:
    store = face.store

    @app.post("/v1/files")
    async def upload_file(request: Request) -> dict[str, Any]:
        owner = await owner_of(request)
        temp = store.files.temp_path()
        try:
            upload = await receive_upload(request, temp, face.max_upload_bytes)
            purpose = upload.fields.get("purpose")
            if purpose not in PURPOSES:
                raise APIError(400, f"purpose must be one of {', '.join(PURPOSES)}, got {purpose!r}", param="purpose")
            assert upload.filename is not None
            row = await run_in_threadpool(store.files.add, owner, upload.filename, purpose, temp)
        finally:
            temp.unlink(missing_ok=True)
        return objects.file_object(row)

    @app.get("/v1/files")
    async def list_files(request: Request) -> dict[str, Any]:
        owner = await owner_of(request)
        order = request.query_params.get("order", "desc")
        if order not in ("asc", "desc"):
            raise APIError(400, f"order must be asc or desc, got {order!r}", param="order")
        rows, more = await run_in_threadpool(
            store.files.list,
            owner,
            request.query_params.get("after"),
            _limit(request, 10_000),
            order,
            request.query_params.get("purpose"),
        )
        return objects.page([objects.file_object(r) for r in rows], more)

    @app.get("/v1/files/{file_id}")
    async def get_file(file_id: str, request: Request) -> dict[str, Any]:
        return objects.file_object(await _file(request, file_id))

    @app.get("/v1/files/{file_id}/content")
    async def file_content(file_id: str, request: Request) -> Any:
        row = await _file(request, file_id)
        return FileResponse(store.files.path(row["id"]), media_type="application/octet-stream")

    @app.delete("/v1/files/{file_id}")
    async def delete_file(file_id: str, request: Request) -> dict[str, Any]:
        owner = await owner_of(request)
        if not await run_in_threadpool(store.files.delete, owner, file_id):
            raise not_found("file", file_id, "file_id")
        return {"id": file_id, "object": "file", "deleted": True}

    async def _file(request: Request, file_id: str) -> dict[str, Any]:
        owner = await owner_of(request)
        row = await run_in_threadpool(store.files.get, owner, file_id)
        if row is None:
            raise not_found("file", file_id, "file_id")
        return row

    @app.post("/v1/fine_tuning/jobs")
    async def create_job(request: Request) -> dict[str, Any]:
        owner = await owner_of(request)
        body = await read_json(request, body_limit)
        if not isinstance(body, dict):
            raise APIError(400, "the request body must be a JSON object")
        try:
            row = await run_in_threadpool(service.create_job, store, owner, body)
        except JobRequestError as exc:
            raise APIError(400, exc.message, param=exc.param, code="invalid_value") from None
        return objects.job_object(row)

    @app.get("/v1/fine_tuning/jobs")
    async def list_jobs(request: Request) -> dict[str, Any]:
        owner = await owner_of(request)
        query = request.query_params.items()
        metadata = {k[9:-1]: v for k, v in query if k.startswith("metadata[") and k.endswith("]")}
        rows, more = await run_in_threadpool(
            service.list_jobs, store, owner, request.query_params.get("after"), _limit(request, 100), metadata
        )
        return objects.page([objects.job_object(r) for r in rows], more)

    @app.get("/v1/fine_tuning/jobs/{job_id}")
    async def get_job(job_id: str, request: Request) -> dict[str, Any]:
        owner = await owner_of(request)
        return objects.job_object(_found(await run_in_threadpool(service.get_job, store, owner, job_id), job_id))

    def _action(act: Callable[..., dict[str, Any] | None]) -> Callable[..., Awaitable[dict[str, Any]]]:
        async def route(job_id: str, request: Request) -> dict[str, Any]:
            owner = await owner_of(request)
            try:
                row = await run_in_threadpool(act, store, owner, job_id)
            except service.JobStateError as exc:
                raise APIError(400, str(exc), code="invalid_state") from None
            return objects.job_object(_found(row, job_id))

        return route

    for action, act in (("cancel", service.cancel_job), ("pause", service.pause_job), ("resume", service.resume_job)):
        app.add_api_route(f"/v1/fine_tuning/jobs/{{job_id}}/{action}", _action(act), methods=["POST"])

    @app.get("/v1/fine_tuning/jobs/{job_id}/events")
    async def list_events(job_id: str, request: Request) -> dict[str, Any]:
        owner = await owner_of(request)
        after, limit = request.query_params.get("after"), _limit(request, 20)
        found = await run_in_threadpool(service.list_events, store, owner, job_id, after, limit)
        rows, more = _found(found, job_id)
        return objects.page([objects.event_object(r) for r in rows], more)

    @app.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
    async def list_checkpoints(job_id: str, request: Request) -> dict[str, Any]:
        owner = await owner_of(request)
        after, limit = request.query_params.get("after"), _limit(request, 10)
        found = await run_in_threadpool(service.list_checkpoints, store, owner, job_id, after, limit)
        rows, more = _found(found, job_id)
        return objects.page([objects.checkpoint_object(r) for r in rows], more)

    @app.delete("/v1/models/{model_id:path}")
    async def delete_model(model_id: str, request: Request) -> dict[str, Any]:
        owner = await owner_of(request)
        if not await run_in_threadpool(service.delete_model, store, owner, model_id):
            raise APIError(404, f"The model '{model_id}' does not exist", param="model", code="model_not_found")
        await run_in_threadpool(face.models.unload, model_id)
        return {"id": model_id, "object": "model", "deleted": True}


def _found(value: Any, job_id: str) -> Any:
    if value is None:
        raise not_found("fine-tuning job", job_id, "fine_tuning_job_id")
    return value


def _limit(request: Request, default: int) -> int:
    text = request.query_params.get("limit")
    if text is None:
        return default
    if not text.isdigit() or not 1 <= int(text) <= 10_000:
        raise APIError(400, f"limit must be an integer from 1 to 10000, got {text!r}", param="limit")
    return int(text)
