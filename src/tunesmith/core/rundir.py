"""The run directory: where each of a run's outputs lives, and which stages have finished (``state.json``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunesmith.core.fs import read_json, write_json


class RunDir:
    """Paths of one run directory: ``runs/<name>/``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    config = property(lambda self: self.root / "config.yaml")
    state = property(lambda self: self.root / "state.json")
    data = property(lambda self: self.root / "data")
    model = property(lambda self: self.root / "model")
    checkpoints = property(lambda self: self.root / "checkpoints")
    metrics = property(lambda self: self.root / "metrics.jsonl")
    eval = property(lambda self: self.root / "eval")
    environment = property(lambda self: self.root / "environment.json")

    def split(self, name: str) -> Path:
        return self.data / f"{name}.jsonl"

    def read_state(self) -> dict[str, Any]:
        """Which stages finished: ``{"stages": {"prepare": {...}, ...}}``; empty for a new run."""
        return read_json(self.state) if self.state.is_file() else {"stages": {}}

    def mark_done(self, stage: str, info: dict[str, Any] | None = None) -> None:
        state = self.read_state()
        state["stages"][stage] = info or {}
        write_json(self.state, state)

    def is_done(self, stage: str) -> bool:
        return stage in self.read_state()["stages"]

    def clear_from(self, stages: list[str]) -> None:
        """Forget the given stages (they and their outputs will be redone)."""
        state = self.read_state()
        for stage in stages:
            state["stages"].pop(stage, None)
        write_json(self.state, state)
