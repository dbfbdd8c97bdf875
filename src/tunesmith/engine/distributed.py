"""Running on several processes: the accelerator and its DeepSpeed / FSDP setup, the collectives the loop needs,
and trainable weights sharded across processes (FSDP, ZeRO-3)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from tunesmith.core.config import TrainingConfig
from tunesmith.engine.precision import choose_precision


def make_accelerator(setting: str) -> Any:
    """An Accelerator computing in ``training.precision`` (``auto``: bf16 autocast where the GPU or the CPU has fast
    bf16, fp32 elsewhere; see engine/precision.py)."""
    from accelerate import Accelerator

    precision = choose_precision(setting).name
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


def distributed_kind(accelerator: Any) -> str:
    """accelerate's distributed type as a plain name: NO, MULTI_CPU, MULTI_GPU, FSDP, DEEPSPEED, ..."""
    return str(getattr(accelerator.distributed_type, "value", accelerator.distributed_type))


def is_deepspeed(accelerator: Any) -> bool:
    return distributed_kind(accelerator) == "DEEPSPEED"


def equal_passes(accelerator: Any) -> bool:
    """Whether every rank must run the same number of forward and backward passes: ZeRO-2 reduces gradients in
    every backward, ZeRO-3 and FSDP gather weights in every forward and FSDP reduce-scatters in every backward,
    all collectives that wait for every rank."""
    return distributed_kind(accelerator) in ("DEEPSPEED", "FSDP")


def global_sum(accelerator: Any, value: float | int | torch.Tensor) -> torch.Tensor:
    """The sum of ``value`` over all processes (``value`` itself, as a tensor, in a single process)."""
    tensor = value if isinstance(value, torch.Tensor) else torch.tensor(float(value), device=accelerator.device)
    return accelerator.reduce(tensor.detach().clone(), reduction="sum") if accelerator.num_processes > 1 else tensor


def trainable_parameters(model: Any) -> list[tuple[str, torch.Tensor]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def trainable_state(model: Any, accelerator: Any) -> dict[str, torch.Tensor]:
    """The trainable weights as full CPU tensors, on every rank (call on every rank: gathering is a collective).

    Single-process, DDP and ZeRO-1/2: read directly. DeepSpeed ZeRO-3 partitions each parameter and FSDP shards
    it (a DTensor): only the trainable ones are gathered, not the whole model.
    """
    params = trainable_parameters(accelerator.unwrap_model(model))
    with gathered(p for _, p in params):
        return {n: _whole_copy(p) for n, p in params}


def _whole_copy(param: torch.Tensor) -> torch.Tensor:
    if _is_dtensor(param):  # FSDP: all-gathered from the shards (a collective)
        return param.full_tensor().detach().cpu().contiguous()
    # a gathered ZeRO-3 weight is freed when the gathering ends: copy it; any other is read in place
    return (param.clone() if hasattr(param, "ds_id") else param).detach().cpu().contiguous()


def assign(param: torch.Tensor, value: torch.Tensor) -> None:
    """Write a whole weight into a parameter, under FSDP into this rank's shard of it (no communication)."""
    if _is_dtensor(param):
        from torch.distributed.tensor import distribute_tensor

        value = value.to(device=param.device, dtype=param.dtype)
        param.copy_(distribute_tensor(value, param.device_mesh, param.placements, src_data_rank=None))
    else:
        param.copy_(value.to(param.device))


def _is_dtensor(tensor: torch.Tensor) -> bool:
    """Whether this is a sharded FSDP2 parameter (a DTensor)."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # a torch build without distributed support
        return False
    return isinstance(tensor, DTensor)


@contextlib.contextmanager
def gathered(params: Iterable[torch.Tensor], modifier_rank: int | None = None) -> Iterator[None]:
    """While active, DeepSpeed ZeRO-3 parameters are whole on every process (enter on every process); a no-op for
    parameters that are not partitioned (single process, DDP, ZeRO-1/2).

    With ``modifier_rank``, what that process writes into them is kept (and partitioned again) on exit.
    """
    partitioned = [p for p in params if hasattr(p, "ds_id")]
    if not partitioned:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(partitioned, modifier_rank=modifier_rank):
        yield


def shards_weights(accelerator: Any) -> bool:
    """Whether each process holds only a shard of every weight: FSDP, or DeepSpeed ZeRO stage 3."""
    if distributed_kind(accelerator) == "FSDP":
        return True
    plugin = getattr(accelerator.state, "deepspeed_plugin", None) if is_deepspeed(accelerator) else None
    return plugin is not None and plugin.zero_stage == 3


def whole_state_dict(model: Any, accelerator: Any) -> dict[str, torch.Tensor] | None:
    """Where weights are sharded (FSDP, ZeRO-3), the model's whole weights on the main process, on CPU, gathered
    one unit at a time (None or empty on the others; a collective: call on every process). None elsewhere: there
    the model's own parameters are whole.

    A sharded model's own ``state_dict()`` holds shards (FSDP) or empty partitions (ZeRO-3), so saving needs
    this; gathering every weight on every process instead would need the whole model in each GPU's memory.
    """
    if not shards_weights(accelerator):
        return None
    if is_deepspeed(accelerator):  # the engine that `prepare` wrapped the model in consolidates its weights
        model = accelerator.deepspeed_engine_wrapped.engine
    return accelerator.get_state_dict(model)
