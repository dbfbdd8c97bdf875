"""Sentence embeddings from an encoder: mean of the token states over the attention mask, L2-normalised.

This is how sentence-transformers pools all-MiniLM-L6-v2 (``minilm-l6``); done here with plain transformers so no
extra package is needed for a dozen lines.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tunesmith.core.progress import Progress
from tunesmith.models.resolve import hub_error, resolve_model


def embed_texts(
    texts: Sequence[str], model: str = "minilm-l6", batch_size: int = 64, max_length: int = 128
) -> np.ndarray:
    """``[len(texts), dim]`` float32 unit vectors (cosine similarity = dot product)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from tunesmith.models.load import quiet_transformers

    quiet_transformers()
    resolved = resolve_model(model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved.location)
        encoder = AutoModel.from_pretrained(resolved.location, use_safetensors=None if resolved.kind == "hub" else True)
    except OSError as exc:
        raise hub_error(model, exc) from None
    encoder.eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths pad less
    out = np.zeros((len(texts), encoder.config.hidden_size), dtype=np.float32)
    with torch.no_grad(), Progress(len(texts), f"embed with {model}", unit="rows") as progress:
        for start in range(0, len(order), batch_size):
            indices = order[start : start + batch_size]
            batch = tokenizer(
                [texts[i] for i in indices], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            )
            states = encoder(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[indices] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
            progress.advance(len(indices))
    return out
