"""Checkpoints a run can resume from: ``checkpoints/step-N/`` is complete or absent, never half-written.

A checkpoint holds what makes the rest of the run identical to a run never interrupted: the trainable
weights (``trainable.safetensors``), optimizer and scheduler state and every process's RNG states
(``state.pt``), and the step and counters (``trainer_state.json``). The data position needs no state:
the batches of a step are a pure function of (seed, step), see ``batching.py``.

Weights are gathered under FSDP and ZeRO-3 (``distributed.trainable_state``). The optimizer state is saved as
one process sees it (single process, DDP), under FSDP gathered whole and keyed by parameter name
(``optimizer_by_name``; every rank takes its shard of it back on resume), and under DeepSpeed ZeRO one partition
per rank (``zero-optimizer-rank-R.pt``).
"""

from __future__ import annotations

import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tunesmith.core.errors import TunesmithError
from tunesmith.core.fs import atomic_dir, read_json, write_json
from tunesmith.engine.distributed import (
    assign,
    distributed_kind,
    gathered,
    is_deepspeed,
    trainable_parameters,
    trainable_state,
)

STEP_DIR = re.compile(r"^step-(\d+)$")
WEIGHTS, STATE, INFO = "trainable.safetensors", "state.pt", "trainer_state.json"


@dataclass
class Resumed:
    step: int
    info: dict[str, Any]
    path: Path


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root``, oldest first (temporary folders of an interrupted save are ignored)."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name)) and (p / INFO).is_file()]
    return sorted(found)


def save_checkpoint(
    root: Path, step: int, model: Any, optimizer: Any, scheduler: Any, accelerator: Any, info: dict[str, Any], keep: int
) -> Path:
    """Write ``root/step-N`` atomically (main process), then drop all but the newest ``keep``. Call on every rank.

    Under DeepSpeed each rank holds its own partition of the optimizer state (and the fp32 master weights): every
    rank writes it to a staging folder, and the main process moves them all in before the one rename that makes
    the checkpoint complete.
    """
    from accelerate.utils import gather_object
    from safetensors.torch import save_file

    rngs = gather_object([rng_state()]) if accelerator.num_processes > 1 else [rng_state()]
    final = root / f"step-{step}"
    weights = trainable_state(model, accelerator)  # every rank: under FSDP / ZeRO-3 this gathers the shards
    fsdp = distributed_kind(accelerator) == "FSDP"
    optimizer_state = _fsdp_optimizer_state(model, optimizer) if fsdp else None  # a collective: every rank
    staging = root / f".step-{step}.ranks"
    if is_deepspeed(accelerator):
        staging.mkdir(parents=True, exist_ok=True)
        part = staging / zero_file(accelerator.process_index)
        torch.save(optimizer.optimizer.state_dict(), part.with_suffix(".partial"))
        part.with_suffix(".partial").replace(part)
        accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with atomic_dir(final) as tmp:
            save_file(weights, str(tmp / WEIGHTS))
            state = {"scheduler": scheduler.state_dict(), "rng": rngs}
            if is_deepspeed(accelerator):
                for rank in range(accelerator.num_processes):
                    (staging / zero_file(rank)).replace(tmp / zero_file(rank))
            elif fsdp:
                state["optimizer_by_name"] = optimizer_state
            else:
                state["optimizer"] = optimizer.state_dict()
            torch.save(state, tmp / STATE)
            write_json(tmp / INFO, {"step": step, "world_size": accelerator.num_processes, **info})
        stale = [old for _, old in checkpoints(root)[:-keep]] + list(root.glob(".step-*"))  # + saves cut by a kill
        for old in stale:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(path: Path, model: Any, optimizer: Any, scheduler: Any, accelerator: Any) -> Resumed:
    """Restore weights, optimizer, scheduler and this process's RNG states from a checkpoint folder."""
    from safetensors.torch import load_file

    info = read_json(path / INFO)
    if info.get("world_size", 1) != accelerator.num_processes:
        raise TunesmithError(
            f"{path} was saved by {info.get('world_size')} processes but this run has {accelerator.num_processes}; "
            "resume with the same number of processes"
        )
    weights = load_file(str(path / WEIGHTS))
    params = dict(trainable_parameters(accelerator.unwrap_model(model)))
    if set(weights) != set(params):
        raise TunesmithError(f"{path}: the checkpoint's weights do not match this model and method; was it changed?")
    with torch.no_grad(), gathered(params.values(), modifier_rank=0):
        for name, param in params.items():
            assign(param, weights[name])
    state = torch.load(path / STATE, weights_only=False, map_location="cpu")  # our own file
    fsdp = distributed_kind(accelerator) == "FSDP"
    if fsdp != ("optimizer_by_name" in state):
        raise TunesmithError(f"{path}: resume it the way it was launched (FSDP or not)")
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        # every rank read the whole state: each takes its own shard of it
        options = StateDictOptions(full_state_dict=True)
        set_optimizer_state_dict(model, optimizer.optimizer, state["optimizer_by_name"], options=options)
    elif is_deepspeed(accelerator):
        if not (path / zero_file(accelerator.process_index)).is_file():
            raise TunesmithError(f"{path} was not saved under DeepSpeed; resume it the way it was launched")
        part = torch.load(path / zero_file(accelerator.process_index), weights_only=False, map_location="cpu")
        mine = [part if rank == accelerator.process_index else None for rank in range(accelerator.num_processes)]
        # the fp32 master weights come from the checkpoint too, not from the (possibly bf16) model weights
        optimizer.optimizer.load_state_dict(mine, load_optimizer_states=True, load_from_fp32_weights=True)
    elif "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    else:
        raise TunesmithError(f"{path} was saved under DeepSpeed; resume it with the same DeepSpeed launch")
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"][accelerator.process_index])
    return Resumed(int(info["step"]), info, path)


def zero_file(rank: int) -> str:
    """One rank's DeepSpeed ZeRO optimizer partition inside a checkpoint."""
    return f"zero-optimizer-rank-{rank}.pt"


def _fsdp_optimizer_state(model: Any, optimizer: Any) -> dict[str, Any]:
    """The whole optimizer state under FSDP, keyed by parameter name, on CPU (a collective: every rank)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_optimizer_state_dict(model, optimizer.optimizer, options=options)
