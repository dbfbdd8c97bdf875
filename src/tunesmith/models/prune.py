"""Layer pruning, ShortGPT-style (Men et al., 2024): drop the decoder layers whose output differs least from
their input (block influence = 1 - cosine similarity, averaged over calibration tokens).

Written here: no maintained library prunes whole layers of a transformers model.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from tunesmith.core.config import PruneConfig
from tunesmith.core.errors import ConfigError
from tunesmith.models.layers import decoder_layers


@dataclass
class PruneReport:
    dropped: list[int]  # indices in the original layer stack
    influence: list[float]  # block influence of every original layer
    layers_before: int
    layers_after: int
    parameters_before: int
    parameters_after: int
    tokens_per_second_before: float  # forward pass over the calibration rows
    tokens_per_second_after: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def layer_influence(model: Any, rows: Sequence[Sequence[int]]) -> list[float]:
    """Block influence of each decoder layer on ``rows`` (token ids, one row per forward)."""
    layers = decoder_layers(model)
    totals = [0.0] * len(layers)

    def hook(index: int) -> Any:
        def record(module: Any, args: tuple, kwargs: dict, output: Any) -> None:
            before = args[0] if args else kwargs["hidden_states"]
            after = output[0] if isinstance(output, tuple) else output
            totals[index] += float((1 - F.cosine_similarity(before.float(), after.float(), dim=-1)).sum())

        return record

    handles = [layer.register_forward_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        _forward(model, rows)
    finally:
        for handle in handles:
            handle.remove()
    tokens = sum(len(r) for r in rows)
    return [t / tokens for t in totals]


def drop_layers(model: Any, indices: Sequence[int]) -> None:
    """Remove decoder layers in place and renumber the rest (KV-cache slots, ``config.num_hidden_layers``)."""
    layers = decoder_layers(model)
    for index in sorted(indices, reverse=True):
        del layers[index]
    for new_index, layer in enumerate(layers):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    kept = [i for i in range(model.config.num_hidden_layers) if i not in set(indices)]
    if isinstance(getattr(model.config, "layer_types", None), list):
        model.config.layer_types = [model.config.layer_types[i] for i in kept]
    model.config.num_hidden_layers = len(layers)


def prune_model(model: Any, prune: PruneConfig, rows: Sequence[Sequence[int]]) -> PruneReport:
    """Score the layers on the calibration rows and drop the ``prune.layers`` least influential ones."""
    count = len(decoder_layers(model))
    if prune.layers >= count:
        raise ConfigError(f"method.prune.layers is {prune.layers} but the model has only {count} layers")
    rows = list(rows)[: prune.calibration_rows]
    parameters_before = sum(p.numel() for p in model.parameters())
    influence = layer_influence(model, rows)
    speed_before = _forward(model, rows)  # timed after the scoring pass warmed the model up
    dropped = sorted(sorted(range(count), key=lambda i: influence[i])[: prune.layers])
    drop_layers(model, dropped)
    return PruneReport(
        dropped=dropped,
        influence=[round(x, 6) for x in influence],
        layers_before=count,
        layers_after=count - len(dropped),
        parameters_before=parameters_before,
        parameters_after=sum(p.numel() for p in model.parameters()),
        tokens_per_second_before=round(speed_before, 1),
        tokens_per_second_after=round(_forward(model, rows), 1),
    )


def _forward(model: Any, rows: Sequence[Sequence[int]]) -> float:
    """Run each row through the model (no padding to mask); return tokens per second."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        for row in rows:
            model(input_ids=torch.tensor([list(row)], device=device), use_cache=False)
    seconds = time.perf_counter() - start
    model.train(was_training)
    return sum(len(r) for r in rows) / max(seconds, 1e-9)
