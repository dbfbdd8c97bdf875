"""Store rows as OpenAI's objects: file, fine_tuning.job, fine_tuning.job.event, fine_tuning.job.checkpoint,
model, and the cursor-paged list around them."""

from __future__ import annotations

from typing import Any


def page(items: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": items,
        "has_more": has_more,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
    }


def file_object(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "file",
        "bytes": row["bytes"],
        "created_at": int(row["created_at"]),
        "expires_at": None,
        "filename": row["filename"],
        "purpose": row["purpose"],
        "status": row["status"],
        "status_details": row["status_details"],
    }


def job_object(row: dict[str, Any]) -> dict[str, Any]:
    hyper = row["hyperparameters"] or {}
    return {
        "id": row["id"],
        "object": "fine_tuning.job",
        "created_at": int(row["created_at"]),
        "error": row["error"],
        "fine_tuned_model": row["fine_tuned_model"],
        "finished_at": int(row["finished_at"]) if row["finished_at"] else None,
        "hyperparameters": {k: hyper[k] for k in ("n_epochs", "batch_size", "learning_rate_multiplier") if k in hyper},
        "model": row["model"],
        "organization_id": row["owner"],
        "result_files": row["result_files"] or [],
        "seed": row["seed"],
        "status": row["status"],
        "trained_tokens": row["trained_tokens"],
        "training_file": row["training_file"],
        "validation_file": row["validation_file"],
        "estimated_finish": None,
        "integrations": [],
        "metadata": row["meta"],
        "method": row["method"],
        "suffix": row["suffix"],
    }


def event_object(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "fine_tuning.job.event",
        "created_at": int(row["created_at"]),
        "level": row["level"],
        "message": row["message"],
        "type": row["type"],
        "data": row["data"],
    }


def checkpoint_object(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "fine_tuning.job.checkpoint",
        "created_at": int(row["created_at"]),
        "fine_tuned_model_checkpoint": row["name"],
        "fine_tuning_job_id": row["job_id"],
        "metrics": row["metrics"],
        "step_number": row["step"],
    }


def model_object(model_id: str, created: int, owner: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owner}
