"""Load a resolved model and its tokenizer with safe defaults (safetensors, no remote code unless asked)."""

from __future__ import annotations

from typing import Any

from tunesmith.core.config import ModelConfig
from tunesmith.core.logs import route_transformers
from tunesmith.models.resolve import ResolvedModel, hub_error, resolve_model


def quiet_transformers() -> None:
    """Hide transformers' per-load progress bars (tunesmith prints its own progress); under the command line, its
    log records (load reports) go to the run's log, not the terminal (``core.logs``)."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    route_transformers()


def load_tokenizer(model: ModelConfig, resolved: ResolvedModel | None = None) -> Any:
    from transformers import AutoTokenizer

    quiet_transformers()
    resolved = resolved or resolve_model(model.name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            resolved.location, revision=model.revision, trust_remote_code=model.trust_remote_code
        )
    except OSError as exc:
        raise hub_error(model.name, exc) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(model: ModelConfig, resolved: ResolvedModel | None = None, quantization: Any | None = None) -> Any:
    """A causal LM in fp32 (mixed precision is applied by the engine, not by the stored weights).

    ``quantization`` (a transformers quantization config, e.g. 4-bit for qlora) loads the weights quantized.
    """
    from transformers import AutoModelForCausalLM

    return load_pretrained(model, AutoModelForCausalLM, resolved, quantization)


def load_pretrained(
    model: ModelConfig,
    auto_class: Any,
    resolved: ResolvedModel | None = None,
    quantization: Any | None = None,
    **kwargs: Any,
) -> Any:
    """``auto_class.from_pretrained`` with tunesmith's safe defaults: fp32, safetensors for local weights, no
    remote code unless the config asks. ``kwargs`` go to ``from_pretrained`` (e.g. ``num_labels``, ``id2label``).
    """
    import torch

    quiet_transformers()
    resolved = resolved or resolve_model(model.name)
    try:
        return auto_class.from_pretrained(
            resolved.location,
            revision=model.revision,
            trust_remote_code=model.trust_remote_code,
            dtype=torch.float32,
            use_safetensors=None if resolved.kind == "hub" else True,
            **({"quantization_config": quantization} if quantization is not None else {}),
            **kwargs,
        )
    except OSError as exc:
        raise hub_error(model.name, exc) from None
