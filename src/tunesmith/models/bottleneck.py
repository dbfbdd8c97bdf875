"""Bottleneck adapter layers (Houlsby et al., 2019): a small residual MLP after attention and feed-forward outputs.

Written here because the maintained library for them (AdapterHub ``adapters`` 1.3) pins transformers 4.57 and
peft has no bottleneck adapters. Each adapter is a child module of the projection it follows and runs from a
forward hook, so the base weights keep their names; only the adapters are saved (safetensors + a JSON config).
A projection is an ``nn.Linear`` or GPT-2's ``Conv1D``; by default the adapters follow the model family's attention
and feed-forward output projections (``models/families.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunesmith.core.config import AdapterConfig
from tunesmith.core.errors import ConfigError, TunesmithError
from tunesmith.models.families import FAMILIES, family_of, model_type, out_features, targeted

WEIGHTS = "bottleneck_adapters.safetensors"
CONFIG = "bottleneck_config.json"
CHILD = "bottleneck"


class Bottleneck(nn.Module):
    """down-project, nonlinearity, up-project; the up-projection starts at zero so the model starts unchanged."""

    def __init__(self, dim: int, size: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, size)
        self.act = nn.GELU()
        self.up = nn.Linear(size, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x)))


def _add_residual(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
    return output + getattr(module, CHILD)(output)


def adapter_targets(model: nn.Module, adapter: AdapterConfig) -> list[str]:
    """The configured target modules, or (when unset) the output projections of the model's family."""
    if adapter.target_modules is not None:
        return adapter.target_modules
    family = family_of(model)
    if family is None:
        raise ConfigError(
            f"method.adapter.target_modules is not set and tunesmith has no default for '{model_type(model)}' "
            f"models (it knows {', '.join(FAMILIES)}).\n"
            "  fix: set method.adapter.target_modules to the model's attention and feed-forward output projections"
        )
    return list(family.outputs)


def add_adapters(model: nn.Module, adapter: AdapterConfig) -> list[str]:
    """Add an adapter after every projection named in the adapter's targets; return their names."""
    targets = adapter_targets(model, adapter)
    added = []
    for name, module in list(model.named_modules()):
        width = out_features(module)
        if width is not None and targeted(name, targets):
            weight = module.weight
            module.add_module(CHILD, Bottleneck(width, adapter.size).to(weight.device, weight.dtype))
            module.register_forward_hook(_add_residual)
            added.append(name)
    if not added:
        raise ConfigError(
            f"method.adapter.target_modules {targets} match no linear (or Conv1D) module of "
            f"{type(model).__name__}; name its attention and feed-forward output projections"
        )
    return added


def adapter_model(model: nn.Module, adapter: AdapterConfig) -> nn.Module:
    """Freeze the model and add trainable adapters; return it."""
    model.requires_grad_(False)
    add_adapters(model, adapter)
    for name, parameter in model.named_parameters():
        if f".{CHILD}." in name:
            parameter.requires_grad_(True)
    return model


def save_adapters(
    model: nn.Module, folder: Path, adapter: AdapterConfig, state_dict: dict[str, torch.Tensor] | None = None
) -> None:
    """Write only the adapter weights (and any other trained weights, e.g. a task head) and their settings.

    ``state_dict``: the model's whole weights, when its own parameters are sharded (FSDP, ZeRO-3).
    """
    from safetensors.torch import save_file

    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    whole = model.state_dict() if state_dict is None else state_dict
    state = {k: v.detach().contiguous() for k, v in whole.items() if f".{CHILD}." in k or k in trained}
    save_file(state, str(folder / WEIGHTS))
    resolved = adapter.model_copy(update={"target_modules": adapter_targets(model, adapter)})
    (folder / CONFIG).write_text(json.dumps(resolved.model_dump(), indent=2), encoding="utf-8")


def load_adapters(base: nn.Module, folder: Path) -> nn.Module:
    """Add the saved adapters to ``base`` (changed in place) and load their weights."""
    from safetensors.torch import load_file

    adapter = AdapterConfig.model_validate(json.loads((folder / CONFIG).read_text(encoding="utf-8")))
    add_adapters(base, adapter)
    state = load_file(str(folder / WEIGHTS))
    known = base.state_dict()
    expected = {k for k in known if f".{CHILD}." in k}
    if {k for k in state if f".{CHILD}." in k} != expected or not set(state) <= set(known):
        raise TunesmithError(f"{folder / WEIGHTS} does not match the base model's layers; was the base changed?")
    base.load_state_dict(state, strict=False)
    return base
