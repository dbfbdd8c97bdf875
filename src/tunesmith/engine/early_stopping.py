"""Early stopping: patience on the validation loss, and the best weights kept to be restored at the end."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from tunesmith.core.fs import atomic_dir
from tunesmith.engine.distributed import assign, gathered, trainable_parameters, trainable_state


class EarlyStopping:
    """Patience on the validation loss; keeps the best trainable weights (in memory, and on disk for resume)."""

    def __init__(self, patience: int | None) -> None:
        self.patience = patience
        self.best, self.best_step, self.waited = math.inf, 0, 0
        self.weights: dict[str, torch.Tensor] | None = None

    def update(self, val_loss: float, step: int, model: Any, accelerator: Any, folder: Path | None) -> bool:
        """Record an evaluation; True when the run should stop."""
        if not self.patience:
            return False
        if val_loss < self.best:
            self.best, self.best_step, self.waited = val_loss, step, 0
            self.weights = {n: w.clone() for n, w in trainable_state(model, accelerator).items()}
            if folder is not None and accelerator.is_main_process:
                from safetensors.torch import save_file

                with atomic_dir(folder / "best") as tmp:
                    save_file(self.weights, str(tmp / "trainable.safetensors"))
            return False
        self.waited += 1
        return self.waited >= self.patience

    def info(self) -> dict[str, Any]:
        return {"best_val_loss": self.best, "best_step": self.best_step, "evals_without_gain": self.waited}

    def load(self, info: dict[str, Any], folder: Path | None) -> None:
        """Restore the counters (and best weights) saved with a checkpoint."""
        if not self.patience or "best_step" not in info:
            return
        self.best, self.best_step, self.waited = info["best_val_loss"], info["best_step"], info["evals_without_gain"]
        if folder is not None and (folder / "best" / "trainable.safetensors").is_file():
            from safetensors.torch import load_file

            self.weights = load_file(str(folder / "best" / "trainable.safetensors"))

    def restore_best(self, model: Any, accelerator: Any, val_loss: float | None) -> float | None:
        """Put the best weights back into the model; return the validation loss that goes with them."""
        if not self.patience or self.weights is None:
            return val_loss
        params = trainable_parameters(accelerator.unwrap_model(model))
        with torch.no_grad(), gathered((p for _, p in params), modifier_rank=0):
            for name, param in params:
                assign(param, self.weights[name])
        return self.best
