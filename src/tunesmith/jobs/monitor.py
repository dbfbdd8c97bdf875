"""What a worker reads from a job's run directory while the run goes on, turned into events and checkpoints:
new lines of ``metrics.jsonl`` (step metrics), new folders in ``checkpoints/``, stages finished in ``state.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunesmith.core.fs import read_json
from tunesmith.jobs.events import add_checkpoint, add_event, publish_steps, step_metrics


class RunMonitor:
    def __init__(self, engine: Any, job: dict[str, Any], run_dir: Path) -> None:
        self.engine, self.job, self.run_dir = engine, job, run_dir
        self.offset = 0
        self.partial = b""
        self.steps: dict[int, dict[str, Any]] = {}
        self.seen_checkpoints: set[int] = set()
        self.seen_stages: set[str] = set(self._stages())  # stages done before this attempt were announced then

    def poll(self) -> None:
        self._metrics()
        self._checkpoints()
        self._stage_events()

    def _metrics(self) -> None:
        path = self.run_dir / "metrics.jsonl"
        if not path.is_file():
            return
        if path.stat().st_size < self.offset:  # truncated by a resume: read it again from the start
            self.offset, self.partial = 0, b""
        with path.open("rb") as handle:
            handle.seek(self.offset)
            chunk = handle.read()
        self.offset += len(chunk)
        lines = (self.partial + chunk).split(b"\n")
        self.partial = lines.pop()  # an unfinished last line waits for its newline
        rows = []
        for line in lines:
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), int):
                self.steps[row["step"]] = row
                rows.append(row)
        if rows:
            publish_steps(self.engine, self.job["id"], rows)

    def _checkpoints(self) -> None:
        from tunesmith.engine.checkpoint import checkpoints

        for step, _path in checkpoints(self.run_dir / "checkpoints"):  # complete ones only
            if step in self.seen_checkpoints:
                continue
            self._metrics()  # the step's metrics line is written before its checkpoint
            self.seen_checkpoints.add(step)
            add_checkpoint(self.engine, self.job, step, self.checkpoint_metrics(step))

    def checkpoint_metrics(self, step: int) -> dict[str, Any]:
        """OpenAI's checkpoint metrics at ``step``: its train loss and the newest validation loss up to it."""
        metrics: dict[str, Any] = {"step": step}
        row = self.steps.get(step)
        if row is not None:
            data = step_metrics(row)
            metrics |= {k: v for k, v in data.items() if k in ("train_loss", "train_mean_token_accuracy")}
        validated = [s for s, r in self.steps.items() if s <= step and "val_loss" in r]
        if validated:
            data = step_metrics(self.steps[max(validated)])
            metrics |= {k: v for k, v in data.items() if k in ("valid_loss", "valid_mean_token_accuracy")}
        return metrics

    def _stages(self) -> dict[str, Any]:
        path = self.run_dir / "state.json"
        try:
            return read_json(path)["stages"] if path.is_file() else {}
        except (OSError, ValueError, KeyError):
            return {}

    def _stage_events(self) -> None:
        for stage, info in self._stages().items():
            if stage in self.seen_stages:
                continue
            self.seen_stages.add(stage)
            with self.engine.begin() as connection:
                add_event(connection, self.job["id"], _stage_message(stage, info or {}), data={"stage": stage})
                for note in (info or {}).get("notes", []) if stage == "prepare" else []:
                    add_event(connection, self.job["id"], f"data: {note}", level="warn")
                rejected = (info or {}).get("rejected") if stage == "prepare" else None
                if rejected:
                    add_event(
                        connection,
                        self.job["id"],
                        f"data: {rejected} rows were dropped (see data/rejects.jsonl of the run)",
                        level="warn",
                    )


def _stage_message(stage: str, info: dict[str, Any]) -> str:
    if stage == "prepare":
        return f"Data prepared: rows {info.get('rows')}"
    if stage == "train":
        steps, tokens, loss = info.get("steps"), info.get("tokens"), info.get("train_loss")
        return f"Training done: {steps} steps, {tokens} tokens, final loss {loss}"
    return f"Stage {stage} done"
