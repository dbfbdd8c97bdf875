"""The queue: jobs rows claimed by workers with one atomic statement, kept by heartbeats, fenced by attempt.

Written here rather than taken from a queue library on purpose (docs/jobs.md): procrastinate and pgqueuer run on
PostgreSQL only, while the zero-setup store is a SQLite file, and huey (SQLite, and PostgreSQL through peewee)
pickles its messages and deletes them when a worker takes them, so a `kill -9` loses the job. What the queue needs
is small: the claim is the statement those libraries use (``UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP
LOCKED) RETURNING``; on SQLite the write lock makes the same UPDATE atomic), plus a heartbeat, so a job whose
worker died is taken again, and an attempt number (a fencing token), so a worker that lost its job can no longer
write to it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from tunesmith.jobs.db import now
from tunesmith.jobs.events import add_event
from tunesmith.jobs.tables import jobs

MAX_LOST = 3  # a job whose worker died this many times is failed rather than taken again


def claim(engine: Any, worker: str, stale_after: float) -> dict[str, Any] | None:
    """Take the oldest queued job, or a running one whose worker stopped beating; the claimed row, or None."""
    stale = now() - stale_after
    _settle_abandoned(engine, stale)
    abandoned = sa.and_(jobs.c.status == "running", jobs.c.heartbeat_at < stale, jobs.c.lost < MAX_LOST)
    takeable = sa.or_(jobs.c.status == "queued", abandoned)
    pick = (
        sa.select(jobs.c.seq)
        .where(takeable)
        .order_by(jobs.c.seq)
        .limit(1)
        .with_for_update(skip_locked=True)  # PostgreSQL: concurrent claims skip this row; SQLite renders nothing
        .scalar_subquery()
    )
    stamp = now()
    update = (
        jobs.update()
        .where(jobs.c.seq == pick, takeable)
        .values(
            status="running",
            worker=worker,
            attempt=jobs.c.attempt + 1,
            lost=jobs.c.lost + sa.case((jobs.c.status == "running", 1), else_=0),
            heartbeat_at=stamp,
            started_at=sa.func.coalesce(jobs.c.started_at, stamp),
        )
        .returning(*jobs.c)
    )
    with engine.begin() as connection:
        row = connection.execute(update).mappings().first()
        if row is None:
            return None
        row = dict(row)
        again = " (its previous worker stopped)" if row["lost"] else ""
        add_event(connection, row["id"], f"Fine-tuning job started on worker {worker}{again}")
    return row


def _settle_abandoned(engine: Any, stale: float) -> None:
    """Jobs whose worker died: cancelled or paused if that was asked of it, failed after MAX_LOST."""
    dead = sa.and_(jobs.c.status == "running", jobs.c.heartbeat_at < stale)
    with engine.begin() as connection:
        for requested, status in (("cancel", "cancelled"), ("pause", "paused")):
            rows = connection.execute(
                jobs.update()
                .where(dead, jobs.c.requested == requested)
                .values(status=status, requested=None, finished_at=now() if status == "cancelled" else None)
                .returning(jobs.c.id)
            ).all()
            for (job_id,) in rows:
                add_event(connection, job_id, f"Job {status} (its worker had stopped)")
        failed = connection.execute(
            jobs.update()
            .where(dead, jobs.c.lost >= MAX_LOST)
            .values(
                status="failed",
                finished_at=now(),
                error={"code": "worker_lost", "message": f"the job's worker stopped {MAX_LOST} times"},
            )
            .returning(jobs.c.id)
        ).all()
        for (job_id,) in failed:
            add_event(connection, job_id, f"Job failed: its worker stopped {MAX_LOST} times", level="error")


def heartbeat(engine: Any, job: dict[str, Any]) -> tuple[bool, str | None]:
    """Beat for a claimed job: (still ours, what was requested of it: cancel | pause | None)."""
    mine = sa.and_(jobs.c.id == job["id"], jobs.c.worker == job["worker"], jobs.c.attempt == job["attempt"])
    with engine.begin() as connection:
        row = connection.execute(
            jobs.update().where(mine, jobs.c.status == "running").values(heartbeat_at=now()).returning(jobs.c.requested)
        ).first()
    return (row is not None, row[0] if row else None)


def requested(engine: Any, job: dict[str, Any]) -> str | None:
    """What was asked of a running job (cancel | pause), read between heartbeats so it is acted on at once."""
    with engine.connect() as connection:
        return connection.execute(sa.select(jobs.c.requested).where(jobs.c.id == job["id"])).scalar()


def finish(
    engine: Any,
    job: dict[str, Any],
    status: str,
    message: str,
    level: str = "info",
    also: Callable[[Any], None] | None = None,
    **fields: Any,
) -> bool:
    """Record how the job's run ended (only while the job is still this worker's); False if it was not. ``also``
    writes more in the same transaction (a succeeded job's model)."""
    mine = sa.and_(jobs.c.id == job["id"], jobs.c.worker == job["worker"], jobs.c.attempt == job["attempt"])
    ended = {"finished_at": now()} if status in ("succeeded", "failed", "cancelled") else {}
    with engine.begin() as connection:
        done = connection.execute(
            jobs.update()
            .where(mine, jobs.c.status == "running")
            .values(status=status, requested=None, **ended, **fields)
        ).rowcount
        if done:
            add_event(connection, job["id"], message, level=level)
            if also is not None:
                also(connection)
    return bool(done)


def requeue(engine: Any, job: dict[str, Any], step: int | None) -> None:
    """Put a job whose worker is shutting down back in the queue; the next worker resumes it."""
    mine = sa.and_(jobs.c.id == job["id"], jobs.c.worker == job["worker"], jobs.c.attempt == job["attempt"])
    with engine.begin() as connection:
        if connection.execute(
            jobs.update().where(mine, jobs.c.status == "running").values(status="queued", worker=None)
        ).rowcount:
            where = f"step {step}" if step else "the start"
            add_event(connection, job["id"], f"Worker {job['worker']} stopped; job queued to resume from {where}")
