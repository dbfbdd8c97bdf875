"""The name of a job's fine-tuned model: ``ft:<base>:<suffix>:<job id>`` (``ft:<base>:<job id>`` without a
suffix), where base is the last part of the model name (a hub id's repository, a folder's name)."""

from __future__ import annotations

from typing import Any


def model_name(job: dict[str, Any]) -> str:
    base = str(job["model"]).rstrip("/").replace("\\", "/").rsplit("/", 1)[-1].replace(":", "-")
    return ":".join(["ft", base, *([job["suffix"]] if job.get("suffix") else []), job["id"]])
