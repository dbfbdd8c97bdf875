"""The runs a studio knows: its jobs (launched through the jobs service, run directories in the jobs home) and the run
directories made with the CLI under ``<workspace>/runs/``. A run's key is its job id, or its folder relative to the
workspace (``runs/<name>``). Reading them is cheap on purpose: the Runs page lists a hundred of them per load."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tunesmith.core.errors import TunesmithError
from tunesmith.jobs.service import get_job, list_jobs
from tunesmith.studio.context import OWNER, Studio

try:  # libyaml's loader: ~10x faster than the pure-Python one (a hundred configs per page load)
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - PyYAML without libyaml
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

ACTIVE = ("queued", "validating_files", "running")


class RunNotFound(TunesmithError):
    """No run with that key in this studio (HTTP 404)."""


@dataclass
class RunView:
    key: str
    name: str
    dir: Path | None  # None while a job has not started
    status: str
    config: dict[str, Any]
    job: dict[str, Any] | None = None

    @property
    def stages(self) -> dict[str, Any]:
        return _read_json(self.dir / "state.json").get("stages", {}) if self.dir else {}

    @property
    def trained(self) -> bool:
        return self.dir is not None and "train" in self.stages and (self.dir / "model").is_dir()

    def summary(self) -> dict[str, Any]:
        """What the list and the pickers show."""
        section = lambda name: self.config.get(name) or {}  # noqa: E731
        return {
            "key": self.key,
            "name": self.name,
            "status": self.status,
            "task": section("task").get("name", "sft"),
            "method": section("method").get("name", "lora"),
            "model": section("model").get("name", ""),
            "trained": self.trained,
            "created": (self.job or {}).get("created_at") or (self.dir.stat().st_mtime if self.dir else None),
            "job": self.job["id"] if self.job else None,
        }


def list_runs(studio: Studio) -> list[RunView]:
    """Every run, newest first: the studio's jobs, then the CLI's run directories."""
    jobs, _ = list_jobs(studio.store, OWNER, None, 10_000, None)
    views = [job_view(studio, job) for job in jobs]
    runs = studio.workspace.runs
    folders = [p for p in runs.iterdir() if (p / "config.yaml").is_file()] if runs.is_dir() else []
    folders.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return views + [_dir_view(studio, p) for p in folders]


def find_run(studio: Studio, key: str) -> RunView:
    if key.startswith("ftjob-"):
        job = get_job(studio.store, OWNER, key)
        if job is None:
            raise RunNotFound(f"no job {key} in this studio")
        return job_view(studio, job)
    folder = studio.workspace.path(key, "run")
    if not (folder / "config.yaml").is_file():
        raise RunNotFound(f"{key} is not a run directory (no config.yaml)")
    return _dir_view(studio, folder)


def trained_run(studio: Studio, key: str) -> RunView:
    view = find_run(studio, key)
    if not view.trained:
        raise TunesmithError(f"{view.name} has no trained model yet (status: {view.status})")
    return view


def job_view(studio: Studio, job: dict[str, Any]) -> RunView:
    folder = studio.store.runs / job["id"]
    name = (job.get("meta") or {}).get("name") or job["id"]
    has_dir = (folder / "config.yaml").is_file()
    return RunView(job["id"], name, folder if has_dir else None, job["status"], job["config"], job)


def _dir_view(studio: Studio, folder: Path) -> RunView:
    config = _read_yaml(folder / "config.yaml")
    stages = _read_json(folder / "state.json").get("stages", {})
    status = "finished" if "report" in stages else "trained" if "train" in stages else "incomplete"
    return RunView(studio.workspace.relative(folder), folder.name, folder, status, config)


def metrics_rows(folder: Path | None) -> list[dict[str, Any]]:
    """The run's metrics.jsonl rows (a torn last line skipped)."""
    path = folder / "metrics.jsonl" if folder else None
    if path is None or not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    return rows


def total_steps(view: RunView) -> int | None:
    """Optimizer steps the run will take: training.max_steps, else its prepared rows over the batch, per epoch."""
    from tunesmith.engine.batching import total_steps as steps

    training = view.config.get("training") or {}
    if training.get("max_steps"):
        return int(training["max_steps"])
    rows = (view.stages.get("prepare") or {}).get("rows", {}).get("train")
    if not rows:
        return None
    per_step = int(training.get("batch_size", 8)) * int(training.get("grad_accum", 1))
    return steps(int(rows), per_step, float(training.get("epochs", 1.0)), None)


def progress(view: RunView, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Step, total and the time left, from the newest metrics row."""
    total = total_steps(view)
    last = rows[-1] if rows else {}
    step, elapsed = last.get("step", 0), last.get("elapsed_s")
    eta = None
    if total and step and elapsed and step < total and view.status in ACTIVE:
        eta = math.ceil(elapsed / step * (total - step))
    return {"step": step, "total": total, "elapsed_s": elapsed, "eta_s": eta}


def log_tail(studio: Studio, view: RunView, lines: int = 40) -> str:
    """The last lines of a job's log (the run's own output)."""
    if view.job is None:
        return ""
    path = studio.store.runs / f"{view.job['id']}.log"
    if not path.is_file():
        return ""
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - 16_384))
        text = handle.read().decode("utf-8", errors="replace")
    return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        value = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except (OSError, yaml.YAMLError):
        return {}
    return value if isinstance(value, dict) else {}
