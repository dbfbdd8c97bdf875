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
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tunesmith.config import TrainingConfig
from tunesmith.engine.batching import step_micro_batches, total_steps
from tunesmith.engine.checkpoint import (
    assign,
    checkpoints,
    distributed_kind,
    gathered,
    is_deepspeed,
    load_checkpoint,
    save_checkpoint,
    trainable_parameters,
    trainable_state,
)
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
from tunesmith.engine.model_options import release_freed_cpu_memory
from tunesmith.engine.packing import attention_implementation, merge_rows, pad_packed, split_rows
from tunesmith.engine.progress import StepProgress
from tunesmith.errors import TunesmithError
from tunesmith.io import append_jsonl, atomic_dir, read_jsonl_log, write_jsonl

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
    cpu = not (torch.cuda.is_available() or torch.backends.mps.is_available())
    mixed_precision = "no" if precision == "fp32" else precision
    if cpu and _launched_with("DEEPSPEED"):
        # cpu=True would turn a DeepSpeed launch into plain DDP. Without it, DeepSpeed's own CPU accelerator runs
        # it, but accelerate only counts the processes of a group whose backend it was told: gloo.
        from accelerate.utils import InitProcessGroupKwargs

        return Accelerator(mixed_precision=mixed_precision, kwargs_handlers=[InitProcessGroupKwargs(backend="gloo")])
    # On a machine without an accelerator, cpu=True is what makes `accelerate launch` processes form a gloo group.
    accelerator = Accelerator(mixed_precision=mixed_precision, cpu=cpu)
    if cpu and _launched_with("FSDP") and accelerator.num_processes > 1:
        shard_on_cpu(accelerator, mixed_precision)
    return accelerator


def shard_on_cpu(accelerator: Any, mixed_precision: str) -> None:
    """Make an FSDP launch on a machine without GPUs shard for real.

    accelerate switches to FSDP on GPUs only (on CPUs it would run the launch as plain DDP, every process holding
    the whole model), but FSDP2 itself shards over a CPU mesh with gloo. This sets the state as accelerate does
    for GPUs, with the plugin read from the launch's ``FSDP_*`` settings; ``prepare`` then applies FSDP2.
    """
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin()
    if mixed_precision != "no":
        plugin.set_mixed_precision(mixed_precision)
    accelerator.state.fsdp_plugin = plugin
    accelerator.state.distributed_type = DistributedType.FSDP
    # accelerate re-reads the process state whenever an AcceleratorState is built (e.g. by its optimizer wrapper)
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP


def _launched_with(kind: str) -> bool:
    """Whether `accelerate launch` was given a config of this distributed type (it exports ACCELERATE_USE_*)."""
    return os.environ.get(f"ACCELERATE_USE_{kind}", "false").lower() in ("1", "true", "yes")


def configure_deepspeed(accelerator: Any, cfg: TrainingConfig) -> None:
    """Fill the DeepSpeed config from ours before ``prepare``: one micro-batch per engine step (the loop does
    the accumulation and the loss normalisation itself), clipping at training.max_grad_norm, and under ZeRO-3
    the consolidated weights that the final save needs."""
    ds = accelerator.state.deepspeed_plugin.deepspeed_config
    ds["train_micro_batch_size_per_gpu"] = cfg.batch_size
    ds["gradient_accumulation_steps"] = 1
    ds.pop("train_batch_size", None)  # DeepSpeed derives it from the two above and the world size
    ds["gradient_clipping"] = float(cfg.max_grad_norm or 0.0)
    zero = ds.setdefault("zero_optimization", {})
    if zero.get("stage") == 3:  # the final save gathers the weights one layer at a time onto the main process
        zero["stage3_gather_16bit_weights_on_model_save"] = True


@contextlib.contextmanager
def neftune(model: Any, alpha: float | None) -> Iterator[None]:
    """NEFTune (Jain et al., 2023): noise on the input embeddings in training mode only, removed afterwards.

    Scale alpha / sqrt(L * d) with L the row length, as in the paper and transformers' Trainer (for packed rows,
    L is the row's length, not each example's).
    """
    if not alpha:
        yield
        return
    embeddings = getattr(model, "module", model).get_input_embeddings()

    def add_noise(module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        if not module.training:
            return output
        scale = alpha / math.sqrt(output.size(1) * output.size(2))
        return output + torch.empty_like(output).uniform_(-scale, scale)

    handle = embeddings.register_forward_hook(add_noise)
    try:
        yield
    finally:
        handle.remove()


def enable_gradient_checkpointing(model: Any) -> None:
    """Recompute activations in backward (non-reentrant: works with frozen embeddings and LoRA, keeps RNG)."""
    options = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 (the old name is deprecated there)
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
    elif hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)
    else:
        raise TrainingError("training.gradient_checkpointing: this model does not support gradient checkpointing")
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "use_cache"):
        config.use_cache = False


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
        from tunesmith.engine.model_options import choose_attention

        choose_attention(model, attention_before, packing=False)


@contextlib.contextmanager
def no_kv_cache(model: Any) -> Iterator[None]:
    """No key/value cache while training: transformers builds one in every forward when ``config.use_cache`` is
    on (the default), which training never reads (and which makes a compiled decoder layer recompile)."""
    config = getattr(model, "config", None)
    before = getattr(config, "use_cache", None)
    if before:
        config.use_cache = False
    try:
        yield
    finally:
        if before:
            config.use_cache = before


def prepare_model(model: Any, cfg: TrainingConfig) -> None:
    """Options that change the model before training: dropout override, liger kernels, torch.compile."""
    from tunesmith.engine.model_options import apply_liger, choose_attention, compile_layers, override_dropout

    choose_attention(model, cfg.attention, cfg.packing)
    if cfg.dropout is not None:
        override_dropout(model, cfg.dropout)
    try:
        apply_liger(model, cfg.liger)
    except RuntimeError as error:
        raise TrainingError(str(error)) from None
    if cfg.compile:
        compile_layers(model)


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
            on_eval(step + 1, val_loss)  # after logging: the callback may stop training (a pruned sweep trial)
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


def equal_passes(accelerator: Any) -> bool:
    """Whether every rank must run the same number of forward and backward passes: ZeRO-2 reduces gradients in
    every backward, ZeRO-3 and FSDP gather weights in every forward and FSDP reduce-scatters in every backward,
    all collectives that wait for every rank."""
    return distributed_kind(accelerator) in ("DEEPSPEED", "FSDP")


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


class Trackers:
    """Experiment trackers fed through accelerate (TensorBoard, MLflow, W&B), on the main process only."""

    def __init__(self, cfg: TrainingConfig, metrics_path: Path | None, main: bool) -> None:
        self.trackers: list[Any] = []
        if not main or metrics_path is None:
            return
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS
        from accelerate.utils import is_mlflow_available, is_tensorboard_available, is_wandb_available

        available = {
            "tensorboard": is_tensorboard_available,
            "mlflow": is_mlflow_available,
            "wandb": is_wandb_available,
        }
        run_dir = metrics_path.parent
        for name in cfg.trackers:
            if not available[name]():
                raise TrainingError(f"training.trackers: {name} is not installed (pip install {name}), or remove it")
            if name == "tensorboard":
                tracker = LOGGER_TYPE_TO_CLASS[name]("tensorboard", logging_dir=str(run_dir))
            elif name == "mlflow":
                tracker = LOGGER_TYPE_TO_CLASS[name](run_dir.name, logging_dir=str(run_dir / "mlruns"))
            else:
                tracker = LOGGER_TYPE_TO_CLASS[name](run_dir.name)
            tracker.start()
            tracker.store_init_configuration(cfg.model_dump(mode="json"))
            self.trackers.append(tracker)

    def log(self, row: dict[str, Any]) -> None:
        values = {f"train/{k}": v for k, v in row.items() if isinstance(v, int | float) and k != "step"}
        for tracker in self.trackers:
            tracker.log(values, step=row["step"])

    def finish(self) -> None:
        for tracker in self.trackers:
            tracker.finish()


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


def backward_window(
    model: Any,
    batches: Sequence[Batch | None],
    fns: TaskFns,
    accelerator: Any,
    trainable: list[torch.Tensor],
    filler: Batch | None = None,
) -> tuple[float, int, int]:
    """Accumulate the gradients of one optimizer step; return (mean loss per target, targets, tokens), all global.

    Each micro-batch's summed loss is divided by the targets of the whole window on all processes (times
    the process count, since DDP and DeepSpeed average gradients), so the result equals one big batch's gradient.
    An empty micro-batch contributes zero gradient; with ``filler`` it still runs a real forward and backward
    (on the filler batch), which DeepSpeed's collectives need.
    """
    world = accelerator.num_processes
    deepspeed = is_deepspeed(accelerator)
    local_targets = sum(fns.count_targets(b) for b in batches if b is not None)
    window_targets = int(_global_sum(accelerator, local_targets))
    loss_total = torch.zeros((), device=accelerator.device)
    tokens = 0
    for position, batch in enumerate(batches):
        last = position == len(batches) - 1
        with _maybe_no_sync(accelerator, model, sync=last):
            if batch is not None and window_targets > 0:
                batch = to_device(batch, model, accelerator)
                loss_sum, _ = fns.loss(model, batch)
                loss_total += loss_sum.detach()
                tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else 0
                loss = loss_sum * world / window_targets
            elif filler is None:  # keeps every rank's backward count equal
                loss = sum(p.sum() for p in trainable) * 0.0
            else:
                loss = fns.loss(model, to_device(batch or filler, model, accelerator))[0] * 0.0
            if deepspeed and last:
                _stop_if_not_finite(accelerator, loss_total, window_targets)
            accelerator.backward(loss)
    totals = _global_sum(accelerator, torch.stack([loss_total, torch.tensor(float(tokens), device=loss_total.device)]))
    return float(totals[0]) / max(window_targets, 1), window_targets, int(totals[1])


@torch.no_grad()
def evaluate_loss(model: Any, examples: Sequence[Any], fns: TaskFns, batch_size: int, accelerator: Any) -> float:
    """Mean loss per target over ``examples`` (each process takes an interleaved share)."""
    model.eval()
    world = accelerator.num_processes
    mine = list(range(accelerator.process_index, len(examples), world))
    total = torch.zeros((), device=accelerator.device)
    count = 0
    # Under DeepSpeed and FSDP every rank runs the same number of forwards (weights are gathered in each one).
    longest_share = math.ceil(len(examples) / world) if equal_passes(accelerator) else 0
    for start in range(0, max(len(mine), longest_share), batch_size):
        indices = mine[start : start + batch_size]
        batch = to_device(fns.collate([examples[i] for i in indices or [0]]), model, accelerator)
        loss_sum, n = fns.loss(model, batch)
        if indices:
            total += loss_sum.detach()
            count += n
    return float(_global_sum(accelerator, total)) / max(int(_global_sum(accelerator, count)), 1)


def to_device(batch: Batch, model: Any, accelerator: Any) -> Batch:
    """Move a batch to the accelerator. For FlexAttention, packed rows become one row padded to a multiple of 128."""
    batch = {k: v.to(accelerator.device, non_blocking=True) for k, v in batch.items()}
    if "seq_ids" in batch and attention_implementation(model) == "flex_attention":
        batch = pad_packed(merge_rows(batch), 128)
    return batch


def _global_sum(accelerator: Any, value: float | int | torch.Tensor) -> torch.Tensor:
    tensor = value if isinstance(value, torch.Tensor) else torch.tensor(float(value), device=accelerator.device)
    return accelerator.reduce(tensor.detach().clone(), reduction="sum") if accelerator.num_processes > 1 else tensor


def _maybe_no_sync(accelerator: Any, model: Any, sync: bool) -> Any:
    """Skip the gradient all-reduce on all but the last micro-batch of a window.

    DeepSpeed ZeRO-2/3 refuses ``no_sync``; there the gradient state says "not a boundary", so the engine
    accumulates and reduces/steps only at the last micro-batch's backward.
    """
    if sync:
        return contextlib.nullcontext()
    return _not_a_boundary(accelerator) if is_deepspeed(accelerator) else accelerator.no_sync(model)


@contextlib.contextmanager
def _not_a_boundary(accelerator: Any) -> Iterator[None]:
    # what accelerate's own `accumulate` does between boundaries; DeepSpeed reads it in `accelerator.backward`
    accelerator.gradient_state._set_sync_gradients(False)
    try:
        yield
    finally:
        accelerator.gradient_state._set_sync_gradients(True)


def _stop_if_not_finite(accelerator: Any, loss_total: torch.Tensor, window_targets: int) -> None:
    """DeepSpeed steps inside the last backward, so a non-finite step cannot be skipped: stop before it."""
    total = float(_global_sum(accelerator, loss_total))
    if not math.isfinite(total):
        raise TrainingError(
            f"non-finite loss ({total / max(window_targets, 1)}) under DeepSpeed, which steps inside backward and "
            "cannot skip a step; the weights were not changed by it. Lower training.learning_rate or use "
            "training.precision fp32"
        )
