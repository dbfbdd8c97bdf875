"""The optimizer and the learning-rate schedule of a training run."""

from __future__ import annotations

import math
from typing import Any

import torch

from tunesmith.core.config import TrainingConfig
from tunesmith.engine.task import TrainingError


def build_optimizer(model: Any, cfg: TrainingConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and norm weights (1-D parameters). Fused kernel when all are on CUDA."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = bool(params) and all(p.is_cuda and p.is_floating_point() for p in params)
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.learning_rate, fused=fused or None)


class PlateauScheduler(torch.optim.lr_scheduler.ReduceLROnPlateau):
    """ReduceLROnPlateau that the loop can step every optimizer step: only a validation loss moves it."""

    def step(self, metrics: float | None = None, epoch: int | None = None) -> None:  # type: ignore[override]
        if metrics is not None:
            super().step(metrics)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainingConfig, steps: int) -> Any:
    from transformers import get_scheduler

    if cfg.scheduler == "reduce_on_plateau":
        if not cfg.eval_every:
            raise TrainingError("training.scheduler=reduce_on_plateau needs training.eval_every and validation data")
        return PlateauScheduler(optimizer, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience)
    warmup = math.floor(cfg.warmup_ratio * steps)
    if cfg.scheduler == "warmup-stable-decay":
        decay = min(max(1, round(cfg.decay_ratio * steps)), steps - warmup)
        extra = {"num_decay_steps": decay}
        return get_scheduler("warmup_stable_decay", optimizer, warmup, steps, scheduler_specific_kwargs=extra)
    name = "constant_with_warmup" if cfg.scheduler == "constant" else cfg.scheduler
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=steps)
