"""What a client may do with its jobs (the HTTP face calls these): create, read, list, cancel, pause, resume,
events, checkpoints, and the fine-tuned models. Every call is scoped to one owner: another owner's job is None,
exactly as a job that does not exist."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from tunesmith.jobs.db import new_id, now
from tunesmith.jobs.events import add_event
from tunesmith.jobs.spec import JobRequestError, JobSpec, build_spec
from tunesmith.jobs.store import Store
from tunesmith.jobs.tables import checkpoints, events, jobs, models

FINAL = ("succeeded", "failed", "cancelled")


class JobStateError(Exception):
    """An action the job's state does not allow (e.g. pausing a finished job)."""


def create_job(store: Store, owner: str, body: dict[str, Any]) -> dict[str, Any]:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise JobRequestError("model is required: the base model to fine-tune (a hub id, alias or folder)", "model")
    train = _usable_file(store, owner, body.get("training_file"), "training_file", required=True)
    valid = _usable_file(store, owner, body.get("validation_file"), "validation_file", required=False)
    suffix = body.get("suffix")
    if suffix is not None and (not isinstance(suffix, str) or not 0 < len(suffix) <= 64 or ":" in suffix):
        raise JobRequestError("suffix must be 1 to 64 characters, without ':'", "suffix")
    metadata = _metadata(body.get("metadata"))
    assert train is not None
    spec = build_spec(
        body,
        store.files.path(train["id"]),
        store.files.path(valid["id"]) if valid else None,
        int((train.get("check") or {}).get("valid_rows") or 1),
    )
    fields = {"model": model, "training_file": train["id"], "validation_file": valid["id"] if valid else None}
    fields |= {"suffix": suffix, "meta": metadata}
    opening = [f"Validating training file: {train['id']}", "Files validated, moving job to queued state"]
    return _queue_job(store, owner, spec, fields, opening)


def create_local_job(
    store: Store, owner: str, config: dict[str, Any], metadata: dict[str, str] | None
) -> dict[str, Any]:
    """A job whose run config names its own data files on this machine: the studio's, whose files lie in its
    workspace. Never reachable over HTTP, where a job's data are its uploaded files (``create_job``)."""
    from tunesmith.core.config import validate_config
    from tunesmith.core.errors import ConfigError

    config = {k: v for k, v in config.items() if k != "output"}
    for key in ("stages", "sweep"):
        if key in config:
            raise JobRequestError(f"{key} is not accepted in a job (one run per job)", key)
    try:
        validated = validate_config({**config, "output": {"dir": "runs", "name": "check"}}, source="config")
    except ConfigError as exc:
        raise JobRequestError(str(exc), "config") from None
    seed = validated.training.seed
    kind = {"dpo": "dpo", "grpo": "reinforcement"}.get(validated.task.name, "supervised")
    spec = JobSpec({"type": kind}, {}, config, seed, [])
    fields = {"model": validated.model.name, "training_file": None, "validation_file": None, "suffix": None}
    fields["meta"] = _metadata(metadata)
    return _queue_job(
        store, owner, spec, fields, [f"Run config checked ({validated.task.name}, {validated.method.name})"]
    )


def _queue_job(store: Store, owner: str, spec: JobSpec, fields: dict[str, Any], opening: list[str]) -> dict[str, Any]:
    job_id = new_id("ftjob")
    spec.config["output"] = {"dir": str(store.runs), "name": job_id}
    row = {
        "id": job_id,
        "owner": owner,
        **fields,
        "seed": spec.seed,
        "method": spec.method,
        "hyperparameters": spec.hyperparameters,
        "config": spec.config,
        "status": "queued",
        "attempt": 0,
        "lost": 0,
        "last_step": 0,
        "created_at": now(),
    }
    with store.engine.begin() as connection:
        connection.execute(jobs.insert().values(**row))
        for message in opening:
            add_event(connection, job_id, message)
        for note in spec.notes:
            add_event(connection, job_id, note, level="warn")
    return get_job(store, owner, job_id) or row


def _usable_file(store: Store, owner: str, file_id: Any, param: str, required: bool) -> dict[str, Any] | None:
    if file_id is None and not required:
        return None
    if not isinstance(file_id, str):
        raise JobRequestError(f"{param} is required: the id of an uploaded file (file-...)", param)
    row = store.files.get(owner, file_id)
    if row is None:
        raise JobRequestError(f"{param}: no such file: '{file_id}'", param)
    if row["status"] != "processed":
        raise JobRequestError(f"{param}: file {file_id} has errors: {row['status_details']}", param)
    return row


def _metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > 16:
        raise JobRequestError("metadata must be an object of at most 16 string pairs", "metadata")
    for key, item in value.items():
        if not isinstance(item, str) or len(key) > 64 or len(item) > 512:
            raise JobRequestError(
                f"metadata.{key}: keys are at most 64 characters and values strings of at most 512", "metadata"
            )
    return dict(value)


def get_job(store: Store, owner: str, job_id: str) -> dict[str, Any] | None:
    with store.engine.connect() as connection:
        row = connection.execute(jobs.select().where(jobs.c.id == job_id, jobs.c.owner == owner)).mappings().first()
    return dict(row) if row else None


def list_jobs(
    store: Store, owner: str, after: str | None, limit: int, metadata: dict[str, str] | None
) -> tuple[list[dict[str, Any]], bool]:
    """Newest first; ``metadata`` keeps jobs whose metadata has every given pair (filtered here: the JSON
    operators differ between SQLite and PostgreSQL)."""
    query = jobs.select().where(jobs.c.owner == owner)
    if after and (cursor := get_job(store, owner, after)) is not None:
        query = query.where(jobs.c.seq < cursor["seq"])
    with store.engine.connect() as connection:
        rows = [dict(r) for r in connection.execute(query.order_by(jobs.c.seq.desc())).mappings()]
    if metadata:
        rows = [r for r in rows if all((r["meta"] or {}).get(k) == v for k, v in metadata.items())]
    return rows[:limit], len(rows) > limit


def cancel_job(store: Store, owner: str, job_id: str, wait: float = 15.0) -> dict[str, Any] | None:
    return _act(store, owner, job_id, "cancel", wait)


def pause_job(store: Store, owner: str, job_id: str, wait: float = 30.0) -> dict[str, Any] | None:
    return _act(store, owner, job_id, "pause", wait)


def resume_job(store: Store, owner: str, job_id: str) -> dict[str, Any] | None:
    mine = sa.and_(jobs.c.id == job_id, jobs.c.owner == owner)
    with store.engine.begin() as connection:
        row = connection.execute(sa.select(jobs.c.status).where(mine)).first()
        if row is None:
            return None
        if row[0] != "paused":
            raise JobStateError(f"job {job_id} is {row[0]}; only a paused job can be resumed")
        connection.execute(jobs.update().where(mine).values(status="queued", requested=None))
        add_event(connection, job_id, "Job resumed: queued to continue from its last checkpoint")
    return get_job(store, owner, job_id)


def _act(store: Store, owner: str, job_id: str, action: str, wait: float) -> dict[str, Any] | None:
    """Cancel or pause: at once when no worker runs the job; else ask its worker and wait (up to ``wait`` seconds)
    until it has stopped the run."""
    final = {"cancel": "cancelled", "pause": "paused"}[action]
    mine = sa.and_(jobs.c.id == job_id, jobs.c.owner == owner)
    idle = ("queued", "validating_files", "paused") if action == "cancel" else ("queued", "validating_files")
    with store.engine.begin() as connection:
        row = connection.execute(sa.select(jobs.c.status).where(mine)).first()
        if row is None:
            return None
        status = row[0]
        if status in idle:
            ended = {"finished_at": now()} if final == "cancelled" else {}
            connection.execute(jobs.update().where(mine).values(status=final, requested=None, **ended))
            add_event(connection, job_id, f"Job {final}")
        elif status == "running":
            connection.execute(jobs.update().where(mine).values(requested=action))
            add_event(connection, job_id, f"{action.capitalize()} requested; stopping the training run")
        elif status != final:
            raise JobStateError(f"job {job_id} is {status} and cannot be {final}")
    deadline = time.monotonic() + wait
    while True:
        job = get_job(store, owner, job_id)
        if job is None or job["status"] != "running" or time.monotonic() > deadline:
            return job
        time.sleep(0.1)


def list_events(
    store: Store, owner: str, job_id: str, after: str | None, limit: int
) -> tuple[list[dict[str, Any]], bool] | None:
    """Newest first, as OpenAI lists them; ``after``: an event id, continue with older ones."""
    return _page(store, owner, job_id, events, after, limit)


def events_after(
    store: Store, owner: str, job_id: str, after_seq: int, limit: int = 1000
) -> list[dict[str, Any]] | None:
    """The job's events after ``after_seq``, oldest first (what a live view appends); None for no such job."""
    if get_job(store, owner, job_id) is None:
        return None
    query = events.select().where(events.c.job_id == job_id, events.c.seq > after_seq)
    with store.engine.connect() as connection:
        rows = connection.execute(query.order_by(events.c.seq).limit(limit)).mappings().all()
    return [dict(r) for r in rows]


def list_checkpoints(
    store: Store, owner: str, job_id: str, after: str | None, limit: int
) -> tuple[list[dict[str, Any]], bool] | None:
    return _page(store, owner, job_id, checkpoints, after, limit)


def _page(
    store: Store, owner: str, job_id: str, table: Any, after: str | None, limit: int
) -> tuple[list[dict[str, Any]], bool] | None:
    if get_job(store, owner, job_id) is None:
        return None
    query = table.select().where(table.c.job_id == job_id)
    with store.engine.connect() as connection:
        if after:
            mark = connection.execute(sa.select(table.c.seq).where(table.c.id == after)).scalar()
            if mark is not None:
                query = query.where(table.c.seq < mark)
        rows = connection.execute(query.order_by(table.c.seq.desc()).limit(limit + 1)).mappings().all()
    return [dict(r) for r in rows[:limit]], len(rows) > limit


def owned_models(store: Store, owner: str) -> list[dict[str, Any]]:
    query = models.select().where(models.c.owner == owner, models.c.deleted_at.is_(None)).order_by(models.c.created_at)
    with store.engine.connect() as connection:
        return [dict(r) for r in connection.execute(query).mappings()]


def owned_model(store: Store, owner: str, model_id: str) -> dict[str, Any] | None:
    query = models.select().where(models.c.id == model_id, models.c.owner == owner, models.c.deleted_at.is_(None))
    with store.engine.connect() as connection:
        row = connection.execute(query).mappings().first()
    return dict(row) if row else None


def delete_model(store: Store, owner: str, model_id: str) -> bool:
    mine = sa.and_(models.c.id == model_id, models.c.owner == owner, models.c.deleted_at.is_(None))
    with store.engine.begin() as connection:
        return connection.execute(models.update().where(mine).values(deleted_at=now())).rowcount == 1
