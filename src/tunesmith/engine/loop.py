"""The training loop on accelerate.

The engine knows nothing about tasks. A recipe hands it three functions: ``collate`` (examples -> batch),
``count_targets`` (batch -> number of target tokens or examples) and ``loss`` (model, batch -> summed loss,
target count). The engine divides each micro-batch's summed loss by the number of targets in the whole
accumulation window across all processes, so the gradient of a step does not depend on how its examples
are split into micro-batches or processes.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tunesmith.core import stop
from tunesmith.core.config import TrainingConfig
from tunesmith.core.errors import TrainingPaused
from tunesmith.core.fs import append_jsonl, read_jsonl_log, write_jsonl
from tunesmith.core.progress import StepProgress
from tunesmith.engine.backward import (
    backward_window,
)
from tunesmith.engine.batching import step_micro_batches, total_steps
from tunesmith.engine.checkpoint import checkpoints, load_checkpoint, save_checkpoint
from tunesmith.engine.distributed import (
    configure_deepspeed,
    equal_passes,
    is_deepspeed,
)
from tunesmith.engine.early_stopping import EarlyStopping
from tunesmith.engine.evaluate import evaluate_loss
from tunesmith.engine.memory import (
    OutOfMemory,
    example_length,
    find_micro_batch,
    is_oom,
    longest_first,
    oom_message,
    release_memory,
    split,
)
from tunesmith.engine.model_options import (
    choose_attention,
    enable_gradient_checkpointing,
    neftune,
    no_kv_cache,
    prepare_model,
    release_freed_cpu_memory,
)
from tunesmith.engine.optim import PlateauScheduler, build_optimizer, build_scheduler
from tunesmith.engine.packing import attention_implementation, split_rows
from tunesmith.engine.task import (
    TaskFns,
    TrainingError,
)
from tunesmith.engine.trackers import Trackers


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


def train(
    model: Any,
    train_examples: Sequence[Any],
    fns: TaskFns,
    cfg: TrainingConfig,
    *,
    accelerator: Any,
    metrics_path: Path | None = None,
    val_examples: Sequence[Any] | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    on_eval: Callable[[int, float], None] | None = None,
) -> TrainSummary:
    """Train ``model`` in place for the configured number of optimizer steps.

    With ``checkpoint_dir`` and ``cfg.save_every``, checkpoints are written there; with ``resume``, training
    continues from the newest one exactly as if it had never stopped (same batches, RNG, optimizer state).
    ``on_eval(step, val_loss)`` is called after each validation (a sweep reports it to its pruner; it may raise
    to stop training).
    """
    from accelerate.utils import set_seed

    set_seed(cfg.seed)
    stop.install()  # a job's pause: SIGUSR1 stops at the next step with a checkpoint
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    attention_before = attention_implementation(model)
    prepare_model(model, cfg)
    # One row at a time keeps the peak small already; trimming after every layer then costs ~20% of the time.
    trim = release_freed_cpu_memory(model, enabled=not rows_one_at_a_time(cfg, accelerator))
    try:
        with neftune(model, cfg.neftune_alpha), trim, no_kv_cache(model):
            return _train(
                model,
                train_examples,
                fns,
                cfg,
                accelerator,
                metrics_path,
                val_examples,
                checkpoint_dir,
                resume,
                on_eval,
            )
    finally:  # generation afterwards (evaluation, serving) uses the attention the model was loaded with
        choose_attention(model, attention_before, packing=False)


def _train(
    model: Any,
    train_examples: Sequence[Any],
    fns: TaskFns,
    cfg: TrainingConfig,
    accelerator: Any,
    metrics_path: Path | None,
    val_examples: Sequence[Any] | None,
    checkpoint_dir: Path | None,
    resume: bool,
    on_eval: Callable[[int, float], None] | None = None,
) -> TrainSummary:
    """The loop proper: optimizer, scheduler, resume, steps, logging, evaluation, checkpoints."""
    world, rank = accelerator.num_processes, accelerator.process_index
    per_step = cfg.batch_size * cfg.grad_accum * world
    n_steps = total_steps(len(train_examples), per_step, cfg.epochs, cfg.max_steps)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, n_steps)
    # The scheduler is stepped by us, once per optimizer step: accelerate's wrapper would step it once per process.
    # Under DeepSpeed it still sets the learning rate: ZeRO keeps our optimizer (and its param_groups) inside.
    if is_deepspeed(accelerator):
        configure_deepspeed(accelerator, cfg)
    model, optimizer = accelerator.prepare(model, optimizer)
    trainable = [p for p in model.parameters() if p.requires_grad]

    state, stopper = _TrainState(), EarlyStopping(cfg.early_stopping_patience)
    if resume and checkpoint_dir is not None and (found := checkpoints(checkpoint_dir)):
        state = _resume(found[-1][1], model, optimizer, scheduler, accelerator, stopper, metrics_path)
    progress = StepProgress(n_steps, enabled=accelerator.is_main_process)
    trackers = Trackers(cfg, metrics_path, accelerator.is_main_process)
    micro = _micro_batch_size(model, train_examples, fns, cfg, accelerator, trainable)
    deepspeed = is_deepspeed(accelerator)
    row_wise = rows_one_at_a_time(cfg, accelerator)
    # A rank whose share of a short last step is smaller runs real passes on this example, with zero weight.
    equal = equal_passes(accelerator)
    filler = fns.collate([train_examples[0]]) if equal else None
    pad_to = cfg.batch_size if equal else 0
    started, elapsed_before = time.perf_counter(), state.elapsed
    loss_value, val_loss = float("nan"), None
    model.train()
    for step in range(state.step, n_steps):
        micro_batches = step_micro_batches(
            len(train_examples),
            step,
            batch_size=cfg.batch_size,
            grad_accum=cfg.grad_accum,
            seed=cfg.seed,
            world_size=world,
            rank=rank,
        )
        while True:
            pieces = [piece for idx in micro_batches for piece in split(idx, micro, pad_to)]
            batches = [fns.collate([train_examples[i] for i in idx]) if idx else None for idx in pieces]
            if row_wise:
                batches = [row for b in batches for row in (split_rows(b) if b is not None else [None])]
            result = _guard_oom(lambda: backward_window(model, batches, fns, accelerator, trainable, filler))  # noqa: B023
            if result is not None:
                break
            optimizer.zero_grad(set_to_none=True)
            release_memory()
            if cfg.micro_batch_size == "auto" and micro and micro > 1:  # the probe missed something: smaller
                micro = max(1, micro * 3 // 4)
                if accelerator.is_main_process:
                    print(f"out of memory at step {step + 1}: micro-batch now {micro}", file=sys.stderr)
                continue
            raise OutOfMemory(oom_message(cfg, None, f"at step {step + 1}"))
        loss_value, window_targets, window_tokens = result
        state.tokens += window_tokens
        grad_norm = None
        if math.isfinite(loss_value) and cfg.max_grad_norm:
            # Under DeepSpeed the engine clipped (and stepped) inside the last backward; this reads its norm.
            norm = accelerator.clip_grad_norm_(trainable, cfg.max_grad_norm)
            grad_norm = float(norm) if norm is not None else None
        good = math.isfinite(loss_value) and (grad_norm is None or math.isfinite(grad_norm))
        if deepspeed and not good:  # DeepSpeed stepped inside backward: there is no skipping a step
            raise TrainingError(
                f"step {step + 1}: non-finite gradient norm ({grad_norm}) under DeepSpeed, which steps inside "
                f"backward; {_kept(state)}.\n  fix: lower training.learning_rate or use training.precision fp32"
            )
        if good:
            if _guard_oom(optimizer.step) is None:  # the optimizer state is allocated at the first step
                raise OutOfMemory(oom_message(cfg, None, f"in the optimizer step {step + 1}"))
            scheduler.step()
        else:
            state.bad_steps += 1
            _check_bad_steps(state, step, loss_value, cfg, accelerator)
        optimizer.zero_grad(set_to_none=True)
        state.step = step + 1

        state.elapsed = elapsed_before + time.perf_counter() - started
        lr = scheduler.get_last_lr()[0]
        row = _metrics_row(state, loss_value, lr, window_targets, grad_norm)
        if val_examples and cfg.eval_every and ((step + 1) % cfg.eval_every == 0 or step + 1 == n_steps):
            val_loss = evaluate_loss(model, val_examples, fns, cfg.batch_size, accelerator)
            row["val_loss"] = round(val_loss, 6)
            if isinstance(scheduler, PlateauScheduler):
                scheduler.step(val_loss)
            model.train()
            if stopper.update(val_loss, step + 1, model, accelerator, checkpoint_dir):
                row["early_stop"] = (
                    f"no improvement in {stopper.patience} evaluations; best at step {stopper.best_step}"
                )
        should_log = (step + 1) % cfg.log_every == 0 or "val_loss" in row or step + 1 == n_steps
        if metrics_path is not None and accelerator.is_main_process and should_log:
            append_jsonl(metrics_path, row)
            trackers.log(row)
        if on_eval is not None and "val_loss" in row:
            try:
                on_eval(step + 1, val_loss)  # after logging: the callback may stop training (a pruned sweep trial)
            except BaseException:
                # A sweep goes on to its next trial in this process: leave no tracker writer thread behind.
                progress.close()
                trackers.finish()
                raise
        if good and checkpoint_dir is not None and cfg.save_every and (step + 1) % cfg.save_every == 0:
            info = {"tokens": state.tokens, "bad_steps": state.bad_steps, "elapsed_s": state.elapsed, **stopper.info()}
            state.last_checkpoint = save_checkpoint(
                checkpoint_dir, step + 1, model, optimizer, scheduler, accelerator, info, cfg.keep_checkpoints
            )
        progress.update(
            step + 1, loss=loss_value, lr=lr, tokens_per_s=state.tokens / state.elapsed, val_loss=row.get("val_loss")
        )
        if "early_stop" in row:
            break
        if stop.requested() and checkpoint_dir is not None and step + 1 < n_steps:  # a job's pause (SIGUSR1)
            if state.last_checkpoint is None or state.last_checkpoint.name != f"step-{state.step}":
                info = {
                    "tokens": state.tokens,
                    "bad_steps": state.bad_steps,
                    "elapsed_s": state.elapsed,
                    **stopper.info(),
                }
                state.last_checkpoint = save_checkpoint(
                    checkpoint_dir, step + 1, model, optimizer, scheduler, accelerator, info, cfg.keep_checkpoints
                )
            progress.close()
            trackers.finish()
            raise TrainingPaused(f"training paused at step {step + 1} ({state.last_checkpoint}); add --resume")
    progress.close()
    trackers.finish()
    val_loss = stopper.restore_best(model, accelerator, val_loss)
    accelerator.wait_for_everyone()
    return TrainSummary(state.step, loss_value, val_loss, state.tokens, state.elapsed)


def rows_one_at_a_time(cfg: TrainingConfig, accelerator: Any) -> bool:
    """Whether micro-batches are computed a packed row at a time, each cut to its own tokens.

    A CPU gains nothing from computing rows together, and padding is computed work. Not under DeepSpeed or FSDP:
    there every rank must run the same number of forward and backward passes.
    """
    return cfg.micro_batch_size is None and accelerator.device.type == "cpu" and not equal_passes(accelerator)


def _guard_oom(fn: Callable[[], Any]) -> Any:
    """``fn()``, or None when it ran out of memory (the error, and the tensors its frames hold, are dropped)."""
    try:
        result = fn()
    except (torch.OutOfMemoryError, RuntimeError) as error:
        if not is_oom(error):
            raise
        return None
    return True if result is None else result


def _micro_batch_size(
    model: Any, examples: Sequence[Any], fns: TaskFns, cfg: TrainingConfig, accelerator: Any, trainable: list
) -> int | None:
    """training.micro_batch_size as a number; ``auto`` tries the longest examples on the GPU (batch_size on CPU)."""
    if cfg.micro_batch_size != "auto":
        return cfg.micro_batch_size
    # A DeepSpeed probe would step the optimizer; one rank's OOM in an FSDP probe would leave the others waiting.
    if accelerator.device.type != "cuda" or equal_passes(accelerator):
        return cfg.batch_size
    lengths = [example_length(e) for e in examples]

    def fits(n: int) -> None:
        batch = fns.collate([examples[i] for i in longest_first(lengths, n)])
        try:
            backward_window(model, [batch], fns, accelerator, trainable)
        finally:
            model.zero_grad(set_to_none=True)

    # 90% of what fits: the optimizer state and allocator fragmentation come after the probe
    found = max(1, int(find_micro_batch(fits, cfg.batch_size) * 0.9))
    if accelerator.is_main_process:
        print(f"training.micro_batch_size: auto -> {found} (batch_size {cfg.batch_size})", file=sys.stderr)
    return found


def _resume(
    path: Path,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    accelerator: Any,
    stopper: EarlyStopping,
    metrics: Path | None,
) -> _TrainState:
    """Load a checkpoint into the live objects and return the loop's counters as they were when it was saved."""
    resumed = load_checkpoint(path, model, optimizer, scheduler, accelerator)
    info = resumed.info
    stopper.load(info, path.parent)
    if metrics is not None and accelerator.is_main_process:
        _truncate_metrics(metrics, resumed.step)
    return _TrainState(resumed.step, info["tokens"], info["bad_steps"], info["elapsed_s"], resumed.path)


def _metrics_row(state: _TrainState, loss: float, lr: float, targets: int, grad_norm: float | None) -> dict[str, Any]:
    """One line of metrics.jsonl; non-finite numbers are written as text so the file stays valid JSON."""

    def number(value: float, digits: int) -> float | str:
        return round(value, digits) if math.isfinite(value) else str(value)

    row: dict[str, Any] = {
        "step": state.step,
        "loss": number(loss, 6),
        "lr": lr,
        "targets": targets,
        "tokens_per_s": round(state.tokens / max(state.elapsed, 1e-9), 1),
        "elapsed_s": round(state.elapsed, 2),
    }
    if grad_norm is not None:
        row["grad_norm"] = number(grad_norm, 6)
    if state.bad_steps:
        row["bad_steps"] = state.bad_steps
    return row


@dataclass
class _TrainState:
    """What a checkpoint carries besides weights, optimizer, scheduler and RNG."""

    step: int = 0
    tokens: int = 0
    bad_steps: int = 0
    elapsed: float = 0.0
    last_checkpoint: Path | None = None


def _check_bad_steps(state: _TrainState, step: int, loss: float, cfg: TrainingConfig, accelerator: Any) -> None:
    """A non-finite step was skipped; stop the run once more than ``cfg.max_bad_steps`` were."""
    if accelerator.is_main_process:
        print(f"step {step + 1}: non-finite loss or gradient ({loss}); skipped, no update", file=sys.stderr)
    if state.bad_steps <= cfg.max_bad_steps:
        return
    raise TrainingError(
        f"training stopped at step {step + 1}: {state.bad_steps} steps had a non-finite loss or gradient, more than "
        f"training.max_bad_steps={cfg.max_bad_steps}; {_kept(state)}.\n"
        "  fix: lower training.learning_rate, keep training.max_grad_norm set, use precision fp32, or check the data"
    )


def _kept(state: _TrainState) -> str:
    last = state.last_checkpoint
    return f"the last good checkpoint is {last}" if last else "no checkpoint was saved"


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric rows written after the checkpoint a run resumes from (they will be written again)."""
    if path.is_file():
        rows = [r for r in read_jsonl_log(path) if r.get("step", 0) <= step]
        write_jsonl(path, rows)
