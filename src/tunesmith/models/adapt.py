"""Make a loaded model trainable by the configured method: full fine-tuning or a LoRA adapter (peft)."""

from __future__ import annotations

from typing import Any

from tunesmith.config import MethodConfig


def apply_method(model: Any, method: MethodConfig) -> Any:
    """Return the model to train: the model itself (full) or a peft model whose only trainable weights are LoRA."""
    if method.name == "full":
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    lora = method.lora
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
