"""Job events (OpenAI's ``fine_tuning.job.event``): stage changes, step metrics, warnings and errors."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from tunesmith.jobs.db import new_id, now
from tunesmith.jobs.names import model_name
from tunesmith.jobs.tables import checkpoints, events, jobs


def add_event(
    connection: Any,
    job_id: str,
    message: str,
    level: str = "info",
    kind: str = "message",
    data: dict[str, Any] | None = None,
) -> None:
    row = {"id": new_id("ftevent"), "job_id": job_id, "created_at": now(), "level": level, "type": kind}
    connection.execute(events.insert().values(**row, message=message, data=data))


def publish_steps(engine: Any, job_id: str, rows: list[dict[str, Any]]) -> None:
    """Metrics events for the steps not yet published (a resumed run logs some steps again: skipped)."""
    with engine.begin() as connection:
        last = connection.execute(sa.select(jobs.c.last_step).where(jobs.c.id == job_id)).scalar() or 0
        new = [r for r in rows if isinstance(r.get("step"), int) and r["step"] > last]
        for row in new:
            data = step_metrics(row)
            parts = [f"training loss={data['train_loss']}"] if "train_loss" in data else []
            if "valid_loss" in data:
                parts.append(f"validation loss={data['valid_loss']}")
            add_event(connection, job_id, f"Step {row['step']}: {', '.join(parts)}", kind="metrics", data=data)
        if new:
            connection.execute(jobs.update().where(jobs.c.id == job_id).values(last_step=new[-1]["step"]))


def step_metrics(row: dict[str, Any]) -> dict[str, Any]:
    """A metrics.jsonl row in OpenAI's names (train_loss, valid_loss, train_mean_token_accuracy, ...)."""
    names = {
        "loss": "train_loss",
        "val_loss": "valid_loss",
        "token_accuracy": "train_mean_token_accuracy",
        "val_token_accuracy": "valid_mean_token_accuracy",
    }
    data: dict[str, Any] = {"step": row["step"]}
    for key, value in row.items():
        if key != "step":
            data[names.get(key, key)] = value
    return data


def add_checkpoint(engine: Any, job: dict[str, Any], step: int, metrics: dict[str, Any]) -> None:
    """A checkpoint row (once per step, however often the step is saved again after a resume)."""
    with engine.begin() as connection:
        exists = connection.execute(
            sa.select(checkpoints.c.id).where(checkpoints.c.job_id == job["id"], checkpoints.c.step == step)
        ).first()
        if exists:
            return
        connection.execute(
            checkpoints.insert().values(
                id=new_id("ftckpt"),
                job_id=job["id"],
                step=step,
                created_at=now(),
                metrics=metrics,
                name=f"{model_name(job)}:ckpt-step-{step}",
            )
        )
        add_event(connection, job["id"], f"Checkpoint created at step {step}")
