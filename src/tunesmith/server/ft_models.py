"""Fine-tuned models of finished jobs, loaded into the server's pool the first time their owner asks for them:
a job that succeeds while the server runs answers on /v1/chat/completions without a restart."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from tunesmith.jobs.service import owned_model
from tunesmith.jobs.store import Store
from tunesmith.ship.inference import ModelPool, Served


class FineTunedModels:
    def __init__(self, store: Store, pool: ModelPool) -> None:
        self.store, self.pool = store, pool
        self.loaded: set[str] = set()
        self.loading = threading.Lock()  # one load at a time: two requests for a new model load it once

    def get(self, owner: str, model_id: str) -> Served | None:
        """The owner's model, loaded on first use; None if it is not theirs (or does not exist)."""
        row = owned_model(self.store, owner, model_id)
        if row is None:
            return None
        with self.loading:
            if model_id not in self.loaded:
                served = _load(Path(row["run_dir"]), model_id)
                with self.pool.lock:
                    self.pool.models[model_id] = served
                self.loaded.add(model_id)
        return self.pool.get(model_id)

    def unload(self, model_id: str) -> None:
        with self.loading, self.pool.lock:
            self.pool.models.pop(model_id, None)
            self.loaded.discard(model_id)

    def is_fine_tuned(self, model_id: str) -> bool:
        return model_id.startswith("ft:") or model_id in self.loaded


def _load(run_dir: Path, model_id: str) -> Any:
    from tunesmith.pipeline.run import Run
    from tunesmith.ship.inference import load_pool

    served = next(iter(load_pool([Run.from_dir(run_dir)]).models.values()))
    served.id = model_id
    return served
