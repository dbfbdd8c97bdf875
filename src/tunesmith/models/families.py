"""Per-architecture defaults, keyed by ``config.model_type``: the one table of module names that methods act on.

LoRA's ``all-linear`` becomes the family's projection list, the bottleneck adapter goes after the family's
attention and feed-forward output projections, and IA3 rescales the family's keys/values and feed-forward output
(peft's defaults, plus the families peft lacks). GPT-2 stores its projections as ``transformers``' ``Conv1D``
(weight transposed, ``nf`` outputs); ``fan_in_fan_out`` tells peft so. Docs: docs/methods.md, "Model families".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn


@dataclass(frozen=True)
class Family:
    """The module names one architecture's methods target (last name parts or dotted suffixes)."""

    lora: tuple[str, ...] | None  # every projection of attention and feed-forward; None: peft's "all-linear"
    outputs: tuple[str, ...]  # attention and feed-forward output projections (bottleneck adapters follow them)
    ia3: tuple[str, ...] | None = None  # None: peft's default for the architecture
    ia3_feedforward: tuple[str, ...] | None = None


_LLAMA_LIKE = Family(
    lora=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    outputs=("o_proj", "down_proj"),
    ia3=("k_proj", "v_proj", "down_proj"),
    ia3_feedforward=("down_proj",),
)

FAMILIES: dict[str, Family] = {
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "gemma2": _LLAMA_LIKE,
    "gemma3_text": _LLAMA_LIKE,
    "phi3": Family(  # fused projections: qkv_proj, gate_up_proj
        lora=("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
        outputs=("o_proj", "down_proj"),
        ia3=("qkv_proj", "down_proj"),
        ia3_feedforward=("down_proj",),
    ),
    "phi": Family(
        lora=("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"),
        outputs=("dense", "fc2"),
        ia3=("q_proj", "v_proj", "fc2"),
        ia3_feedforward=("fc2",),
    ),
    "gpt2": Family(  # Conv1D projections; c_proj is both the attention and the MLP output
        lora=("c_attn", "c_proj", "c_fc"),
        outputs=("c_proj",),
        ia3=("c_attn", "mlp.c_proj"),
        ia3_feedforward=("mlp.c_proj",),
    ),
    # encoders and encoder-decoders (task heads, seq2seq): adapters only, LoRA stays peft's all-linear
    "bert": Family(lora=None, outputs=("output.dense",)),
    "t5": Family(lora=None, outputs=("o", "wo")),
}


def model_type(model: Any) -> str | None:
    """``config.model_type`` of a transformers model, or of the model inside a peft wrapper."""
    get_base = getattr(model, "get_base_model", None)
    inner = get_base() if callable(get_base) else model
    return getattr(getattr(inner, "config", None), "model_type", None)


def family_of(model: Any) -> Family | None:
    """The model's row of ``FAMILIES``; None for an architecture the table does not list."""
    return FAMILIES.get(model_type(model) or "")


def targeted(name: str, targets: list[str] | tuple[str, ...]) -> bool:
    """A module named by its last name part (``o_proj``) or a dotted suffix (BERT's ``output.dense``)."""
    return any(name == t or name.endswith("." + t) for t in targets)


def out_features(module: nn.Module) -> int | None:
    """Output width of a projection: ``nn.Linear``'s ``out_features``, ``Conv1D``'s ``nf``; None for anything else."""
    from transformers.pytorch_utils import Conv1D

    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, Conv1D):
        return int(module.nf)
    return None


def uses_conv1d(model: nn.Module, targets: str | list[str] | tuple[str, ...]) -> bool:
    """Whether the targeted projections are ``Conv1D`` (weights stored transposed: peft's ``fan_in_fan_out``).

    A string target (``all-linear`` or a regex) counts every ``Conv1D`` of the model.
    """
    from transformers.pytorch_utils import Conv1D

    return any(
        isinstance(module, Conv1D) and (isinstance(targets, str) or targeted(name, targets))
        for name, module in model.named_modules()
    )
