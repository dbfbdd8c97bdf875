"""Write a decoder (Llama, Qwen2/3, Gemma 1/2/3, Phi-3, GPT-2) and its byte-level BPE tokenizer as GGUF (f16, q8_0).

The layout follows llama.cpp's ``convert_hf_to_gguf.py``: ``gguf``'s tensor name map, each family's tensor changes
and extra metadata (``gguf_families``: the ``ARCHITECTURES`` table), 1-D tensors (norms, biases) kept in f32, and
the tokenizer as ``gpt2``
metadata (tokens, token types, merges, llama.cpp's pre-tokenizer, special and end-of-turn ids, BOS/EOS adding,
chat template). It is written here, in a few lines, because
llama.cpp's converter is a script in its repository, not part of the ``gguf`` package.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.core.errors import TunesmithError
from tunesmith.models.gguf_families import ARCHITECTURES
from tunesmith.models.gguf_pretok import pre_tokenizer_name

KINDS = ("f16", "q8_0")


def write_gguf(model: Any, tokenizer: Any, path: Path, kind: str) -> Path:
    """Write ``model`` (a causal LM of a family in ``ARCHITECTURES``) and ``tokenizer`` to ``path``; return ``path``."""
    import gguf

    if kind not in KINDS:
        raise TunesmithError(f"--gguf {kind!r}: expected one of {', '.join(KINDS)}")
    config = model.config
    if config.model_type not in ARCHITECTURES:
        raise TunesmithError(
            f"--gguf supports {', '.join(ARCHITECTURES)} models; this model is '{config.model_type}'. "
            "Export without --gguf."
        )
    family = ARCHITECTURES[config.model_type]
    arch = gguf.MODEL_ARCH[family.gguf]
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[arch])
    writer.add_name(Path(str(getattr(config, "_name_or_path", "") or "model")).name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
    family.metadata(writer, config)
    writer.add_vocab_size(config.vocab_size)
    file_type = gguf.LlamaFileType.MOSTLY_F16 if kind == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_tokenizer(writer, tokenizer, config.vocab_size)

    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue  # llama.cpp reuses token_embd for the output when the embeddings are tied
        data = family.tensor(hf_name, tensor.detach().float().cpu().numpy(), config)
        if data is None:
            continue
        base, _, suffix = hf_name.rpartition(".")
        gguf_base = names.get_name(base)
        if gguf_base is None:
            raise TunesmithError(f"--gguf: no GGUF name for tensor {hf_name!r}")
        _add_tensor(writer, f"{gguf_base}.{suffix}", data, kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _add_tensor(writer: Any, name: str, data: np.ndarray, kind: str) -> None:
    import gguf

    if data.ndim == 1:  # norms stay f32, as llama.cpp keeps them
        writer.add_tensor(name, data.astype(np.float32))
    elif kind == "q8_0" and data.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0:
        quantized = gguf.quants.quantize(data.astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(name, quantized, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    else:
        writer.add_tensor(name, data.astype(np.float16))


def _add_tokenizer(writer: Any, tokenizer: Any, vocab_size: int) -> None:
    import gguf

    backend = getattr(tokenizer, "backend_tokenizer", None)
    spec = json.loads(backend.to_str()) if backend is not None else {}
    model = spec.get("model", {})
    byte_level = "ByteLevel" in json.dumps(spec.get("pre_tokenizer"))
    if model.get("type") != "BPE" or not byte_level:
        raise TunesmithError(
            "--gguf supports byte-level BPE tokenizers (GPT-2 / Llama-3 / SmolLM style); this tokenizer is "
            f"{model.get('type', type(tokenizer).__name__)}"
        )
    size = len(tokenizer)
    if size > vocab_size:
        raise TunesmithError(f"--gguf: the tokenizer has {size} tokens but the model only {vocab_size} embeddings")
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    added = set(tokenizer.added_tokens_decoder) - special  # split off whole, like special ones, but plain text
    tokens = tokenizer.convert_ids_to_tokens(list(range(size))) + [f"[PAD{i}]" for i in range(size, vocab_size)]
    types = [
        gguf.TokenType.CONTROL if i in special else gguf.TokenType.USER_DEFINED if i in added else gguf.TokenType.NORMAL
        for i in range(size)
    ]
    types += [gguf.TokenType.UNUSED] * (vocab_size - size)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer_name(tokenizer))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    # The tokenizer's EOS is the chat template's end of turn (tunesmith sets it so): llama.cpp stops there.
    for token_id, add in (
        (tokenizer.bos_token_id, writer.add_bos_token_id),
        (tokenizer.eos_token_id, writer.add_eos_token_id),
        (tokenizer.eos_token_id, writer.add_eot_token_id),
        (tokenizer.pad_token_id, writer.add_pad_token_id),
    ):
        if token_id is not None:
            add(token_id)
    plain, marked = tokenizer("a", add_special_tokens=False)["input_ids"], tokenizer("a")["input_ids"]
    writer.add_add_bos_token(
        tokenizer.bos_token_id is not None and marked[: len(marked) - len(plain)] == [tokenizer.bos_token_id]
    )
    writer.add_add_eos_token(
        tokenizer.eos_token_id is not None and marked[len(plain) :][-1:] == [tokenizer.eos_token_id]
    )
    if getattr(tokenizer, "chat_template", None):
        writer.add_chat_template(tokenizer.chat_template)
