"""Per-family parts of the GGUF writer: which llama.cpp architecture a ``model_type`` becomes, its extra metadata,
and how its tensors change on the way (as llama.cpp's ``convert_hf_to_gguf.py`` does for each family).

- Llama: q/k permuted into llama.cpp's interleaved rotary layout. Qwen2/Qwen3 and Phi-3 run with NEOX rotary,
  transformers' own layout; Phi-3's fused ``qkv_proj`` / ``gate_up_proj`` are llama.cpp's ``attn_qkv`` / ``ffn_up``.
- Gemma 1/2/3: RMSNorm weights stored +1 (transformers multiplies by ``1 + w``), the embedding scale is llama.cpp's
  own; Gemma 2's attention and final soft-capping, sliding window and per-layer window pattern; Gemma 3's local and
  global rotary bases. llama.cpp fixes the query scale (1/sqrt(head_dim), or 1/sqrt(hidden/heads) for the 27B
  sizes); a config's other ``query_pre_attn_scalar`` is folded into the query weights (Gemma 3: its q norm).
- GPT-2: ``Conv1D`` weights transposed to ``nn.Linear``'s layout, learned positions, LayerNorm with bias.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tunesmith.core.errors import TunesmithError

Metadata = Callable[[Any, Any], None]  # (gguf writer, config): the family's hyperparameter keys
Transform = Callable[[str, np.ndarray, Any], "np.ndarray | None"]  # (HF name, data, config) -> data; None: skip


@dataclass(frozen=True)
class Architecture:
    """One ``model_type``'s GGUF form: llama.cpp's architecture name, its metadata, its tensor transform."""

    gguf: str  # a gguf.MODEL_ARCH member name
    metadata: Metadata
    tensor: Transform
    # whether transformers' GGUF loader reads the file back as written (export then also compares its logits);
    # it does not for Gemma (no gemma loader; Gemma 2/3 read with other attention settings) or GPT-2 (its
    # context length is not read, so a model with other than 1024 positions does not load)
    reloads: bool = True


def head_dim(config: Any) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def rope_theta(config: Any, layer_type: str = "full_attention") -> float:
    """The rotary base (of ``layer_type``'s layers where the config has one per type); scaled rotary is refused."""
    parameters = getattr(config, "rope_parameters", None) or {}
    if isinstance(parameters.get(layer_type), dict):
        parameters = parameters[layer_type]
    if isinstance(parameters, dict) and parameters.get("rope_type", "default") not in ("default", None):
        raise TunesmithError(f"--gguf: rope scaling {parameters['rope_type']!r} is not supported")
    return float(parameters.get("rope_theta") or getattr(config, "rope_theta", None) or 10000.0)


def _rotary(writer: Any, config: Any) -> None:
    """What every rotary decoder here writes: feed-forward width, head sizes, rotary dims and base, RMSNorm eps."""
    size = head_dim(config)
    parameters = getattr(config, "rope_parameters", None) or {}
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_key_length(size)
    writer.add_value_length(size)
    writer.add_rope_dimension_count(int(size * (parameters.get("partial_rotary_factor") or 1.0)))
    writer.add_rope_freq_base(rope_theta(config))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)


def _same(_name: str, data: np.ndarray, _config: Any) -> np.ndarray:
    return data


def _permute(weights: np.ndarray, n: int) -> np.ndarray:
    """llama.cpp's rotary layout for q/k over ``n`` heads (transformers undoes it when it loads a GGUF)."""
    return weights.reshape(n, 2, weights.shape[0] // n // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def _llama_tensor(name: str, data: np.ndarray, config: Any) -> np.ndarray:
    if name.endswith("q_proj.weight"):
        return _permute(data, config.num_attention_heads)
    if name.endswith("k_proj.weight"):
        return _permute(data, config.num_key_value_heads or config.num_attention_heads)
    return data


def _phi3_metadata(writer: Any, config: Any) -> None:
    _rotary(writer, config)
    writer.add_rope_scaling_orig_ctx_len(getattr(config, "original_max_position_embeddings", None) or 4096)
    writer.add_sliding_window(getattr(config, "sliding_window", None) or 0)  # 0: no window, as the converter


def _gpt2_metadata(writer: Any, config: Any) -> None:
    writer.add_feed_forward_length(getattr(config, "n_inner", None) or 4 * config.hidden_size)
    writer.add_layer_norm_eps(config.layer_norm_epsilon)


def _gpt2_tensor(name: str, data: np.ndarray, _config: Any) -> np.ndarray | None:
    if name.endswith((".attn.bias", ".attn.masked_bias")):
        return None  # causal-mask buffers, not weights
    if name.endswith((".c_attn.weight", ".c_proj.weight", ".c_fc.weight")):
        return np.ascontiguousarray(data.T)  # Conv1D stores (in, out); llama.cpp wants nn.Linear's (out, in)
    return data


_GEMMA_27B_LAYERS = {"gemma2": 46, "gemma3_text": 62}  # llama.cpp's sizes with 1/sqrt(hidden/heads) as query scale


def _query_factor(config: Any) -> float:
    """What the queries need multiplying by so that llama.cpp's fixed query scale gives transformers' own."""
    scalar = getattr(config, "query_pre_attn_scalar", None)
    if scalar is None:
        return 1.0
    big = config.num_hidden_layers == _GEMMA_27B_LAYERS.get(config.model_type)
    llama_cpp = config.hidden_size // config.num_attention_heads if big else head_dim(config)
    return float(np.sqrt(llama_cpp / scalar))


def _gemma_tensor(name: str, data: np.ndarray, config: Any) -> np.ndarray:
    if name.endswith("norm.weight"):
        data = data + 1.0
    # Gemma 3 normalises q after the projection, so the factor goes into its q norm; Gemma 2 into q_proj
    query = "q_norm.weight" if config.model_type == "gemma3_text" else "q_proj.weight"
    return data * _query_factor(config) if name.endswith(query) else data


def _sliding(writer: Any, config: Any) -> None:
    """The window and which layers use it, per layer, from the config's ``layer_types``."""
    writer.add_sliding_window(config.sliding_window)
    layer_types = getattr(config, "layer_types", None)
    if layer_types:
        writer.add_sliding_window_pattern([kind == "sliding_attention" for kind in layer_types])


def _gemma_metadata(writer: Any, config: Any) -> None:
    if not getattr(config, "tie_word_embeddings", True):  # Gemma 3 has an output tensor of its own; 1 and 2 not
        raise TunesmithError(f"--gguf: llama.cpp's {config.model_type} needs tied input and output embeddings")
    _rotary(writer, config)


def _gemma2_metadata(writer: Any, config: Any) -> None:
    _gemma_metadata(writer, config)
    if config.attn_logit_softcapping:
        writer.add_attn_logit_softcapping(config.attn_logit_softcapping)
    if config.final_logit_softcapping:
        writer.add_final_logit_softcapping(config.final_logit_softcapping)
    _sliding(writer, config)


def _gemma3_metadata(writer: Any, config: Any) -> None:
    if getattr(config, "attn_logit_softcapping", None) or getattr(config, "use_bidirectional_attention", False):
        raise TunesmithError("--gguf: llama.cpp's gemma3 has no attention soft-capping or bidirectional attention")
    _rotary(writer, config)  # the global layers' base
    if config.final_logit_softcapping:
        writer.add_final_logit_softcapping(config.final_logit_softcapping)
    _sliding(writer, config)
    writer.add_rope_freq_base_swa(rope_theta(config, "sliding_attention"))


# model_type -> how it is written; families not listed are refused with a message naming the model_type
ARCHITECTURES: dict[str, Architecture] = {
    "llama": Architecture("LLAMA", _rotary, _llama_tensor),
    "qwen2": Architecture("QWEN2", _rotary, _same),
    "qwen3": Architecture("QWEN3", _rotary, _same),
    "gemma": Architecture("GEMMA", _gemma_metadata, _gemma_tensor, reloads=False),
    "gemma2": Architecture("GEMMA2", _gemma2_metadata, _gemma_tensor, reloads=False),
    "gemma3_text": Architecture("GEMMA3", _gemma3_metadata, _gemma_tensor, reloads=False),
    "phi3": Architecture("PHI3", _phi3_metadata, _same),
    "gpt2": Architecture("GPT2", _gpt2_metadata, _gpt2_tensor, reloads=False),
}
