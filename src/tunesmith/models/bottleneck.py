"""Bottleneck adapter layers (Houlsby et al., 2019): a small residual MLP after attention and feed-forward outputs.

Written here because the maintained library for them (AdapterHub ``adapters`` 1.3) pins transformers 4.57 and
peft has no bottleneck adapters. Each adapter is a child module of the projection it follows and runs from a
forward hook, so the base weights keep their names; only the adapters are saved (safetensors + a JSON config).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunesmith.core.config import AdapterConfig
from tunesmith.core.errors import ConfigError, TunesmithError

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


def add_adapters(model: nn.Module, adapter: AdapterConfig) -> list[str]:
    """Add an adapter after every linear module named in ``adapter.target_modules``; return their names."""
    added = []
    for name, module in list(model.named_modules()):
        if _targeted(name, adapter.target_modules) and isinstance(module, nn.Linear):
            weight = module.weight
            module.add_module(CHILD, Bottleneck(module.out_features, adapter.size).to(weight.device, weight.dtype))
            module.register_forward_hook(_add_residual)
            added.append(name)
    if not added:
        raise ConfigError(
            f"method.adapter.target_modules {adapter.target_modules} match no linear module of "
            f"{type(model).__name__}; name its attention and feed-forward output projections"
        )
    return added


def _targeted(name: str, targets: list[str]) -> bool:
    """A module named by its last name part (``o_proj``) or a dotted suffix (BERT's ``output.dense``)."""
    return any(name == t or name.endswith("." + t) for t in targets)


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
    (folder / CONFIG).write_text(json.dumps(adapter.model_dump(), indent=2), encoding="utf-8")


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
