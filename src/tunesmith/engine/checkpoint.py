"""Checkpoints a run can resume from: ``checkpoints/step-N/`` is complete or absent, never half-written.

A checkpoint holds what makes the rest of the run identical to a run never interrupted: the trainable
weights (``trainable.safetensors``), optimizer and scheduler state and every process's RNG states
(``state.pt``), and the step and counters (``trainer_state.json``). The data position needs no state:
the batches of a step are a pure function of (seed, step), see ``batching.py``.

Weights are gathered correctly under FSDP and ZeRO-3 (``trainable_state``); the optimizer state is saved
as one process sees it, so checkpoints and resume are for single-process and DDP runs (the engine refuses
``save_every`` / ``--resume`` under FSDP rather than write a checkpoint it could not restore).
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

from tunesmith.errors import TunesmithError
from tunesmith.io import atomic_dir, read_json, write_json

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
    """Write ``root/step-N`` atomically (main process), then drop all but the newest ``keep``. Call on every rank."""
    from accelerate.utils import gather_object
    from safetensors.torch import save_file

    rngs = gather_object([rng_state()]) if accelerator.num_processes > 1 else [rng_state()]
    final = root / f"step-{step}"
    weights = trainable_state(model, accelerator)  # every rank: under FSDP / ZeRO-3 this gathers the shards
    if accelerator.is_main_process:
        with atomic_dir(final) as tmp:
            save_file(weights, str(tmp / WEIGHTS))
            state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rngs}
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
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(weights[name])
    state = torch.load(path / STATE, weights_only=False, map_location="cpu")  # our own file
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"][accelerator.process_index])
    return Resumed(int(info["step"]), info, path)


def trainable_state(model: Any, accelerator: Any) -> dict[str, torch.Tensor]:
    """The trainable weights as full CPU tensors, on the main process (call on every rank).

    Single-process and DDP: read directly. FSDP and DeepSpeed ZeRO-3 shard parameters across processes, so the
    full state dict is gathered with ``accelerator.get_state_dict`` (a collective) and filtered to the
    trainable names.
    """
    inner = accelerator.unwrap_model(model)
    names = [n for n, _ in trainable_parameters(inner)]
    kind = str(getattr(accelerator.distributed_type, "value", accelerator.distributed_type))
    if kind in ("FSDP", "DEEPSPEED"):
        full = accelerator.get_state_dict(model)
        return {n: full[n].detach().cpu().contiguous() for n in names if n in full} if full else {}
    return {n: p.detach().cpu().contiguous() for n, p in trainable_parameters(inner)}


def trainable_parameters(model: Any) -> list[tuple[str, torch.Tensor]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]
