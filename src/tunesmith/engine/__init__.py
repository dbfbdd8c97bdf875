"""The training engine: the loop, and the pieces recipes and the pipeline build on (accelerator, optimizer,
checkpoints, packing, losses). Import these names from here, not from the module that holds them.

The names are imported on first use: every engine module imports torch, and ``import tunesmith.engine`` does not.
``estimate`` stays ``from tunesmith.engine.estimate import estimate``: the function has its module's name.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tunesmith.engine.backward import backward_window, to_device
    from tunesmith.engine.batching import epoch_order, step_micro_batches, steps_per_epoch
    from tunesmith.engine.checkpoint import checkpoints, load_checkpoint, save_checkpoint
    from tunesmith.engine.distributed import distributed_kind, make_accelerator, shards_weights, whole_state_dict
    from tunesmith.engine.evaluate import evaluate_loss
    from tunesmith.engine.lm_loss import (
        capture_final_hidden,
        causal_lm_loss,
        fast_path_possible,
        full_logits_loss,
        linear_cross_entropy,
        unwrap,
    )
    from tunesmith.engine.loop import train
    from tunesmith.engine.memory import OutOfMemory, find_micro_batch
    from tunesmith.engine.model_options import (
        choose_attention,
        compile_layers,
        decoder_layers,
        enable_gradient_checkpointing,
        override_dropout,
        release_freed_cpu_memory,
    )
    from tunesmith.engine.optim import build_optimizer, build_scheduler
    from tunesmith.engine.packing import (
        attention_implementation,
        block_causal_mask,
        merge_rows,
        model_inputs,
        pack,
        pad_packed,
        plan_rows,
        split_rows,
    )
    from tunesmith.engine.task import Batch, TaskFns, TrainingError

__all__ = [
    "Batch",
    "OutOfMemory",
    "TaskFns",
    "TrainingError",
    "attention_implementation",
    "backward_window",
    "block_causal_mask",
    "build_optimizer",
    "build_scheduler",
    "capture_final_hidden",
    "causal_lm_loss",
    "checkpoints",
    "choose_attention",
    "compile_layers",
    "decoder_layers",
    "distributed_kind",
    "enable_gradient_checkpointing",
    "epoch_order",
    "evaluate_loss",
    "fast_path_possible",
    "find_micro_batch",
    "full_logits_loss",
    "linear_cross_entropy",
    "load_checkpoint",
    "make_accelerator",
    "merge_rows",
    "model_inputs",
    "override_dropout",
    "pack",
    "pad_packed",
    "plan_rows",
    "release_freed_cpu_memory",
    "save_checkpoint",
    "shards_weights",
    "split_rows",
    "step_micro_batches",
    "steps_per_epoch",
    "to_device",
    "train",
    "unwrap",
    "whole_state_dict",
]

# The module of this package that holds each name of __all__.
_HOMES = {
    "backward": ("backward_window", "to_device"),
    "batching": ("epoch_order", "step_micro_batches", "steps_per_epoch"),
    "checkpoint": ("checkpoints", "load_checkpoint", "save_checkpoint"),
    "distributed": ("distributed_kind", "make_accelerator", "shards_weights", "whole_state_dict"),
    "evaluate": ("evaluate_loss",),
    "lm_loss": (
        "capture_final_hidden",
        "causal_lm_loss",
        "fast_path_possible",
        "full_logits_loss",
        "linear_cross_entropy",
        "unwrap",
    ),
    "loop": ("train",),
    "memory": ("OutOfMemory", "find_micro_batch"),
    "model_options": (
        "choose_attention",
        "compile_layers",
        "decoder_layers",
        "enable_gradient_checkpointing",
        "override_dropout",
        "release_freed_cpu_memory",
    ),
    "optim": ("build_optimizer", "build_scheduler"),
    "packing": (
        "attention_implementation",
        "block_causal_mask",
        "merge_rows",
        "model_inputs",
        "pack",
        "pad_packed",
        "plan_rows",
        "split_rows",
    ),
    "task": ("Batch", "TaskFns", "TrainingError"),
}
_HOME = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:  # a submodule (`from tunesmith.engine import lm_loss`) is then imported by the import system
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
