"""Freeze tuning: train only the top N decoder layers and/or the output head; every other weight stays fixed."""

from __future__ import annotations

from typing import Any

from tunesmith.core.config import FreezeConfig
from tunesmith.core.errors import ConfigError
from tunesmith.models.layers import decoder_layers, output_head


def freeze_model(model: Any, freeze: FreezeConfig) -> Any:
    """Set ``requires_grad`` so that only the chosen layers (and head) train; return the model."""
    layers = decoder_layers(model)
    if freeze.train_layers > len(layers):
        raise ConfigError(
            f"method.freeze.train_layers is {freeze.train_layers} but the model has {len(layers)} layers; "
            "use train_layers up to that, or method.name: full"
        )
    model.requires_grad_(False)
    for layer in list(layers)[len(layers) - freeze.train_layers :]:
        layer.requires_grad_(True)
    if freeze.train_head:  # with tied embeddings this also trains the input embeddings (one shared matrix)
        output_head(model).requires_grad_(True)
    return model
