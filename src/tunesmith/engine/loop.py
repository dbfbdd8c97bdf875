"""The training loop on accelerate.

The engine knows nothing about tasks. A recipe hands it three functions: ``collate`` (examples -> batch),
``count_targets`` (batch -> number of target tokens or examples) and ``loss`` (model, batch -> summed loss,
target count). The engine divides each micro-batch's summed loss by the number of targets in the whole
accumulation window across all processes, so the gradient of a step does not depend on how its examples
are split into micro-batches or processes.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tunesmith.config import TrainingConfig
from tunesmith.engine.batching import step_micro_batches, total_steps
from tunesmith.engine.progress import StepProgress
from tunesmith.errors import TunesmithError
from tunesmith.io import append_jsonl

Batch = dict[str, torch.Tensor]


class TrainingError(TunesmithError):
    """Training cannot continue (e.g. the loss became NaN)."""


@dataclass
class TaskFns:
    """What a recipe gives the engine."""

    collate: Callable[[Sequence[Any]], Batch]
    count_targets: Callable[[Batch], int]
    loss: Callable[[Any, Batch], tuple[torch.Tensor, int]]


@dataclass
class TrainSummary:
    steps: int
    train_loss: float
    val_loss: float | None
    tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def make_accelerator(precision: str) -> Any:
    """An Accelerator with mixed precision: bf16 autocast where the GPU supports it, fp32 on CPU."""
    from accelerate import Accelerator

    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    return Accelerator(mixed_precision="no" if precision == "fp32" else precision)


def build_optimizer(model: Any, cfg: TrainingConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and norm weights (1-D parameters)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.learning_rate)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainingConfig, steps: int) -> Any:
    from transformers import get_scheduler

    name = "constant_with_warmup" if cfg.scheduler == "constant" else cfg.scheduler
    warmup = math.floor(cfg.warmup_ratio * steps)
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=steps)


def train(
    model: Any,
    train_examples: Sequence[Any],
    fns: TaskFns,
    cfg: TrainingConfig,
    *,
    accelerator: Any,
    metrics_path: Path | None = None,
    val_examples: Sequence[Any] | None = None,
) -> TrainSummary:
    """Train ``model`` in place for the configured number of optimizer steps."""
    from accelerate.utils import set_seed

    set_seed(cfg.seed)
    world, rank = accelerator.num_processes, accelerator.process_index
    per_step = cfg.batch_size * cfg.grad_accum * world
    n_steps = total_steps(len(train_examples), per_step, cfg.epochs, cfg.max_steps)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, n_steps)
    # The scheduler is stepped by us, once per optimizer step: accelerate's wrapper would step it once per process.
    model, optimizer = accelerator.prepare(model, optimizer)
    trainable = [p for p in model.parameters() if p.requires_grad]

    progress = StepProgress(n_steps, enabled=accelerator.is_main_process)
    started, tokens, loss_value, val_loss = time.perf_counter(), 0, float("nan"), None
    model.train()
    for step in range(n_steps):
        micro_batches = step_micro_batches(
            len(train_examples),
            step,
            batch_size=cfg.batch_size,
            grad_accum=cfg.grad_accum,
            seed=cfg.seed,
            world_size=world,
            rank=rank,
        )
        batches = [fns.collate([train_examples[i] for i in idx]) if idx else None for idx in micro_batches]
        loss_value, window_targets, window_tokens = backward_window(model, batches, fns, accelerator, trainable)
        tokens += window_tokens
        if not math.isfinite(loss_value):
            raise TrainingError(
                f"loss is {loss_value} at step {step + 1}; lower training.learning_rate or check the data"
            )
        grad_norm = None
        if cfg.max_grad_norm:
            grad_norm = float(accelerator.clip_grad_norm_(trainable, cfg.max_grad_norm))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        elapsed = time.perf_counter() - started
        lr = scheduler.get_last_lr()[0]
        row: dict[str, Any] = {
            "step": step + 1,
            "loss": round(loss_value, 6),
            "lr": lr,
            "targets": window_targets,
            "tokens_per_s": round(tokens / elapsed, 1),
            "elapsed_s": round(elapsed, 2),
        }
        if grad_norm is not None:
            row["grad_norm"] = round(grad_norm, 6)
        if val_examples and cfg.eval_every and ((step + 1) % cfg.eval_every == 0 or step + 1 == n_steps):
            val_loss = evaluate_loss(model, val_examples, fns, cfg.batch_size, accelerator)
            row["val_loss"] = round(val_loss, 6)
            model.train()
        should_log = (step + 1) % cfg.log_every == 0 or "val_loss" in row or step + 1 == n_steps
        if metrics_path is not None and accelerator.is_main_process and should_log:
            append_jsonl(metrics_path, row)
        progress.update(step + 1, loss=loss_value, lr=lr, tokens_per_s=tokens / elapsed, val_loss=row.get("val_loss"))
    progress.close()
    accelerator.wait_for_everyone()
    return TrainSummary(n_steps, loss_value, val_loss, tokens, time.perf_counter() - started)


def backward_window(
    model: Any, batches: Sequence[Batch | None], fns: TaskFns, accelerator: Any, trainable: list[torch.Tensor]
) -> tuple[float, int, int]:
    """Accumulate the gradients of one optimizer step; return (mean loss per target, targets, tokens).

    Each micro-batch's summed loss is divided by the targets of the whole window on all processes (times
    the process count, since DDP averages gradients), so the result equals one big batch's gradient.
    """
    world = accelerator.num_processes
    local_targets = sum(fns.count_targets(b) for b in batches if b is not None)
    window_targets = int(_global_sum(accelerator, local_targets))
    loss_total = torch.zeros((), device=accelerator.device)
    tokens = 0
    for position, batch in enumerate(batches):
        with _maybe_no_sync(accelerator, model, sync=position == len(batches) - 1):
            if batch is None or window_targets == 0:
                # Keeps every rank's backward count equal; contributes zero gradient.
                loss = sum(p.sum() for p in trainable) * 0.0
            else:
                batch = {k: v.to(accelerator.device) for k, v in batch.items()}
                loss_sum, _ = fns.loss(model, batch)
                loss_total += loss_sum.detach()
                tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else 0
                loss = loss_sum * world / window_targets
            accelerator.backward(loss)
    return float(_global_sum(accelerator, loss_total)) / max(window_targets, 1), window_targets, tokens


@torch.no_grad()
def evaluate_loss(model: Any, examples: Sequence[Any], fns: TaskFns, batch_size: int, accelerator: Any) -> float:
    """Mean loss per target over ``examples`` (each process takes an interleaved share)."""
    model.eval()
    mine = list(range(accelerator.process_index, len(examples), accelerator.num_processes))
    total = torch.zeros((), device=accelerator.device)
    count = 0
    for start in range(0, len(mine), batch_size):
        batch = fns.collate([examples[i] for i in mine[start : start + batch_size]])
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        loss_sum, n = fns.loss(model, batch)
        total += loss_sum.detach()
        count += n
    return float(_global_sum(accelerator, total)) / max(int(_global_sum(accelerator, count)), 1)


def _global_sum(accelerator: Any, value: float | int | torch.Tensor) -> torch.Tensor:
    tensor = value if isinstance(value, torch.Tensor) else torch.tensor(float(value), device=accelerator.device)
    return accelerator.reduce(tensor.detach().clone(), reduction="sum") if accelerator.num_processes > 1 else tensor


def _maybe_no_sync(accelerator: Any, model: Any, sync: bool) -> Any:
    """Skip the gradient all-reduce on all but the last micro-batch of a window."""
    return contextlib.nullcontext() if sync else accelerator.no_sync(model)
