"""Find the parts of a transformers model that methods act on: the decoder layer stack and the output head."""

from __future__ import annotations

from typing import Any

from torch import nn

from tunesmith.core.errors import ConfigError


def decoder_layers(model: Any) -> nn.ModuleList:
    """The model's stack of transformer blocks (``model.layers`` in Llama, ``transformer.h`` in GPT-2, ...).

    Encoder-decoder models (T5, BART) have two stacks: the decoder's, next to the output head, is returned.
    """
    if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_decoder"):
        stacks = [m for m in model.get_decoder().children() if isinstance(m, nn.ModuleList)]
        if stacks:
            return stacks[0]
    count = getattr(model.config, "num_hidden_layers", None)
    stacks = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == count]
    if not stacks:
        raise ConfigError(f"cannot find the stack of {count} layers in {type(model).__name__}")
    return stacks[0]


def output_head(model: Any) -> nn.Module:
    """The LM head (output embeddings) or, for task models, the classification head."""
    for name in ("score", "classifier", "qa_outputs"):
        head = getattr(model, name, None)
        if isinstance(head, nn.Module):
            return head
    head = model.get_output_embeddings()
    if head is None:
        raise ConfigError(f"cannot find the output head of {type(model).__name__}")
    return head
