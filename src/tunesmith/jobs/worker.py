"""`tunesmith worker`: claim queued jobs and run each as a normal `tunesmith run` in its own process and run
directory, beating a heartbeat, publishing its events and checkpoints, and stopping it on cancel or pause.

A restarted job continues from its newest checkpoint (``--resume``), so a worker killed mid-training loses at most
the steps since then; the resumed run is bitwise equal to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml

from tunesmith.core.console import console
from tunesmith.core.errors import TrainingPaused
from tunesmith.core.fs import read_json, read_jsonl_log, write_text
from tunesmith.jobs import queue
from tunesmith.jobs.db import new_id, now
from tunesmith.jobs.events import add_event
from tunesmith.jobs.monitor import RunMonitor
from tunesmith.jobs.names import model_name
from tunesmith.jobs.store import Store
from tunesmith.jobs.tables import files, models

PAUSED_EXIT = TrainingPaused.exit_code


class Worker:
    def __init__(
        self,
        store: Store,
        name: str | None = None,
        poll: float = 1.0,
        stale_after: float = 60.0,
        stop_grace: float = 60.0,
    ) -> None:
        self.store, self.poll, self.stale_after, self.stop_grace = store, poll, stale_after, stop_grace
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{new_id('w')[2:10]}"
        self.beat_every = max(0.2, stale_after / 6)

    def run(self, stop: threading.Event | None = None, once: bool = False) -> None:
        """Take and run jobs until ``stop`` is set (or, with ``once``, until the queue is empty)."""
        stop = stop or threading.Event()
        while not stop.is_set():
            job = queue.claim(self.store.engine, self.name, self.stale_after)
            if job is None:
                if once:
                    return
                stop.wait(self.poll)
                continue
            console.print(f"[bold]worker[/] {self.name}: running {job['id']}")
            try:
                self.run_job(job, stop)
            except (
                Exception
            ) as exc:  # e.g. the database went away: the job's heartbeat stops, another worker resumes it
                console.print(
                    f"[bold red]worker {self.name}: job {job['id']} abandoned:[/] {type(exc).__name__}: {exc}"
                )
                stop.wait(self.poll)

    def run_job(self, job: dict[str, Any], stop: threading.Event) -> None:
        run_dir = self.store.runs / job["id"]
        config = self.store.runs / f"{job['id']}.yaml"
        write_text(config, yaml.safe_dump(job["config"], sort_keys=False))
        resume = any((run_dir / "checkpoints").glob("step-*"))
        command = [sys.executable, "-m", "tunesmith.cli", "run", str(config), *(["--resume"] if resume else [])]
        log = self.store.runs / f"{job['id']}.log"
        with log.open("ab") as out:
            out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command[2:])}\n".encode())
            out.flush()
            child = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                preexec_fn=_die_with_parent,
                env={**os.environ, "TUNESMITH_JOB": job["id"]},
            )  # fmt: skip
        try:
            self._watch(job, child, stop, run_dir, log)
        finally:
            if child.poll() is None:
                _kill(child)

    def _watch(
        self, job: dict[str, Any], child: subprocess.Popen[bytes], stop: threading.Event, run_dir: Path, log: Path
    ) -> None:
        monitor = RunMonitor(self.store.engine, job, run_dir)
        asked: str | None = None
        asked_at = 0.0
        beat = 0.0
        while child.poll() is None:
            if time.monotonic() - beat >= self.beat_every:
                beat = time.monotonic()
                ours, requested = queue.heartbeat(self.store.engine, job)
                if not ours:  # another worker took the job (this one was thought dead): leave it alone
                    _kill(child)
                    return
            else:
                requested = queue.requested(self.store.engine, job)
            if requested and asked is None:
                asked, asked_at = requested, time.monotonic()
                _signal(child, signal.SIGUSR1 if requested == "pause" else signal.SIGTERM)
            if stop.is_set():  # the worker is shutting down: the job goes back to the queue, resumable
                _stop(child, signal.SIGUSR1, self.stop_grace)
                break
            if asked == "cancel" and time.monotonic() - asked_at > 5:
                _kill(child)
            if asked == "pause" and time.monotonic() - asked_at > self.stop_grace:
                _kill(child)  # a loop that ignores the request: the last periodic checkpoint is where it resumes
            with contextlib.suppress(sa.exc.OperationalError):
                monitor.poll()
            time.sleep(0.25)
        code = child.wait()
        monitor.poll()
        self._ended(job, code, asked, stop.is_set(), run_dir, log)

    def _ended(
        self, job: dict[str, Any], code: int, asked: str | None, stopping: bool, run_dir: Path, log: Path
    ) -> None:
        engine = self.store.engine
        if asked == "cancel":
            queue.finish(engine, job, "cancelled", "Job cancelled")
        elif stopping:
            queue.requeue(engine, job, _newest_checkpoint(run_dir))
        elif asked == "pause" or code == PAUSED_EXIT:
            queue.finish(engine, job, "paused", f"Job paused at step {_newest_checkpoint(run_dir)}")
        elif code == 0:
            self._succeeded(job, run_dir)
        else:
            message = _failure(log, code)
            queue.finish(
                engine, job, "failed", f"Job failed: {message}", level="error",
                error={"code": "run_failed", "message": message, "param": None},
            )  # fmt: skip

    def _succeeded(self, job: dict[str, Any], run_dir: Path) -> None:
        name = model_name(job)
        state = read_json(run_dir / "state.json")["stages"]
        result = self._result_file(job, run_dir)
        fields = {
            "fine_tuned_model": name,
            "trained_tokens": state.get("train", {}).get("tokens"),
            "result_files": [result],
        }

        def add_model(connection: Any) -> None:
            row = {"id": name, "owner": job["owner"], "job_id": job["id"], "run_dir": str(run_dir), "created_at": now()}
            connection.execute(models.insert().values(**row))
            add_event(connection, job["id"], f"New fine-tuned model created: {name}")

        queue.finish(
            self.store.engine, job, "succeeded", "The job has successfully completed", also=add_model, **fields
        )

    def _result_file(self, job: dict[str, Any], run_dir: Path) -> str:
        """``step_metrics.csv`` as a file the owner can download (OpenAI's result file)."""
        rows = read_jsonl_log(run_dir / "metrics.jsonl")
        columns = list(dict.fromkeys(k for r in rows for k in r))
        text = io.StringIO()
        writer = csv.DictWriter(text, columns)
        writer.writeheader()
        writer.writerows(rows)
        file_id = new_id("file")
        path = self.store.files.path(file_id)
        write_text(path, text.getvalue())
        with self.store.engine.begin() as connection:
            connection.execute(
                files.insert().values(
                    id=file_id, owner=job["owner"], filename="step_metrics.csv", purpose="fine-tune-results",
                    bytes=path.stat().st_size, created_at=now(), status="processed",
                )
            )  # fmt: skip
        return file_id


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the worker thread that started it dies (Linux's PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def _signal(child: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signum)


def _kill(child: subprocess.Popen[bytes]) -> None:
    _signal(child, signal.SIGKILL)
    child.wait()


def _stop(child: subprocess.Popen[bytes], signum: int, grace: float) -> None:
    _signal(child, signum)
    try:
        child.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        _kill(child)


def _newest_checkpoint(run_dir: Path) -> int | None:
    steps = [int(p.name[5:]) for p in (run_dir / "checkpoints").glob("step-*") if p.name[5:].isdigit()]
    return max(steps, default=None)


def _failure(log: Path, code: int) -> str:
    """The run's own error message (its `error:` lines), else how it ended."""
    text = log.read_text(encoding="utf-8", errors="replace")[-20_000:]
    text = text.rsplit("\n--- ", 1)[-1]
    found = re.findall(r"^error: (.*(?:\n  .*)*)", text, re.MULTILINE)
    if found:
        return found[-1].strip()
    if code < 0:
        return f"the training process was killed by signal {signal.Signals(-code).name}"
    last = [line for line in text.splitlines() if line.strip()][-3:]
    return f"the training process exited with code {code}: " + " | ".join(last)
