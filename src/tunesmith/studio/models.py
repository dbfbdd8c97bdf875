"""Models the playground talks to: trained runs loaded once (LoRA runs on one base share it, each run's base model is
``<key>:base``), kept while the same runs are asked for, replaced when others are."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from tunesmith.core.errors import TunesmithError
from tunesmith.ship.inference import ModelPool, Served, load_pool
from tunesmith.studio.context import Studio
from tunesmith.studio.runs import RunView, trained_run

BASE = ":base"


@dataclass
class Choice:
    """A model as the playground names it: a run's key, with ``:base`` for the model it started from."""

    key: str
    view: RunView
    base: bool

    @property
    def label(self) -> str:
        return f"{self.view.name} (base: {self.view.config['model']['name']})" if self.base else self.view.name

    @property
    def base_model(self) -> str:
        return str(self.view.config["model"]["name"])


def choose(studio: Studio, key: str) -> Choice:
    run_key, base = (key[: -len(BASE)], True) if key.endswith(BASE) else (key, False)
    return Choice(key, trained_run(studio, run_key), base)


class ModelCache:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.loaded: tuple[str, ...] = ()
        self.pool: ModelPool | None = None

    def served(self, choices: list[Choice]) -> tuple[ModelPool, list[Served]]:
        """The pool holding every chosen model (loaded now unless it already holds their runs)."""
        from tunesmith.pipeline.trained import TrainedRun

        folders = tuple(sorted({str(c.view.dir) for c in choices}))
        with self.lock:
            if self.pool is None or not set(folders) <= set(self.loaded):
                self.pool = None  # free the old models before loading the new ones
                runs = [TrainedRun.from_dir(folder) for folder in folders]
                self.pool, self.loaded = load_pool(runs, include_base=True), folders
            pool = self.pool
        out = []
        for choice in choices:
            assert choice.view.dir is not None
            name = choice.view.dir.resolve().name + (BASE if choice.base else "")
            served = pool.get(name)
            if served is None or not served.generates:
                raise TunesmithError(
                    f"{choice.label} cannot answer chat messages (a {choice.view.summary()['task']} run)"
                )
            out.append(served)
        return pool, out

    def close(self) -> None:
        self.pool = None


def cache(studio: Studio) -> ModelCache:
    return studio.extra("models", ModelCache)


def describe(choice: Choice) -> dict[str, Any]:
    return {"key": choice.key, "label": choice.label}
