"""GGUF exports checked in llama.cpp itself (llama-cpp-python): the real SmolLM2-135M written as f16 and q8_0 must
tokenize, answer greedily and stop as in transformers; a wrong pre-tokenizer in the metadata is caught."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import gguf
import pytest
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from tunesmith.core.errors import TunesmithError
from tunesmith.models import gguf_writer
from tunesmith.models.gguf_pretok import pre_tokenizer_name
from tunesmith.models.gguf_writer import write_gguf
from tunesmith.ship.gguf_check import check_in_llama_cpp, greedy_replies, llama_cpp_missing

# short answers, so that the greedy replies end at <|im_end|> within the 24 compared tokens
QUESTIONS = ("What is the capital of France? Answer in one word.", "Say yes or no: is 7 larger than 3?")


@pytest.fixture(scope="module")
def smollm2(smollm2_dir: Path) -> tuple[Any, Any, list[Any]]:
    """The model, its tokenizer, and transformers' greedy replies to QUESTIONS (computed once for every check)."""
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    prompts = [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        for q in QUESTIONS
    ]
    return model, tokenizer, greedy_replies(model, tokenizer, prompts)


def _fields(path: Path, *keys: str) -> list[Any]:
    fields = gguf.GGUFReader(str(path)).fields
    return [fields[key].contents() for key in keys]


@pytest.mark.parametrize("kind", ["f16", "q8_0"])
def test_smollm2_gguf_behaves_in_llama_cpp_as_in_transformers(
    smollm2: tuple[Any, Any, list[Any]], tmp_path: Path, kind: str
) -> None:
    model, tokenizer, replies = smollm2
    path = write_gguf(model, tokenizer, tmp_path / f"model-{kind}.gguf", kind)
    keys = ("tokenizer.ggml.pre", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.add_bos_token")
    pre, eot, add_bos = _fields(path, *keys)
    assert pre == "smollm"  # what llama.cpp's convert_hf_to_gguf.py writes for SmolLM2
    assert eot == tokenizer.convert_tokens_to_ids("<|im_end|>") and add_bos is False

    figures = check_in_llama_cpp(path, tokenizer, kind, replies)
    tokenization, greedy = figures["tokenization"], figures["greedy"]
    assert tokenization["equal"] == tokenization["texts"] >= 8 and tokenization["bos_as_tokenizer"]
    assert greedy["prompts"] == greedy["stopped"] == greedy["same_stop"] == 2  # both replies ended the turn
    if kind == "f16":
        assert greedy["top_token_agreement"] == 1.0 and greedy["identical_replies"] == 2
    else:
        assert greedy["top_token_agreement"] >= 0.95


def test_a_wrong_pre_tokenizer_is_refused(
    smollm2: tuple[Any, Any, list[Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the writer did before: 'default' for every tokenizer. llama.cpp then splits punctuation apart."""
    model, tokenizer, replies = smollm2
    monkeypatch.setattr(gguf_writer, "pre_tokenizer_name", lambda _tokenizer: "default")
    path = write_gguf(model, tokenizer, tmp_path / "model-f16.gguf", "f16")
    assert _fields(path, "tokenizer.ggml.pre") == ["default"]
    with pytest.raises(TunesmithError, match=r"GGUF behaves differently in llama.cpp: llama.cpp tokenizes \d+ of"):
        check_in_llama_cpp(path, tokenizer, "f16", replies)


def test_an_unknown_pre_tokenizer_is_refused_not_written_as_default(tiny_model_dir: Path, tmp_path: Path) -> None:
    from tokenizers import pre_tokenizers

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert pre_tokenizer_name(tokenizer) == "gpt-2"  # a trained byte-level BPE: GPT-2's split, which llama.cpp has
    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Punctuation(), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    with pytest.raises(TunesmithError, match="no pre-tokenizer known to split text like this tokenizer"):
        pre_tokenizer_name(tokenizer)


def test_without_llama_cpp_python_the_check_is_skipped_and_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # what an environment without the package imports
    missing = llama_cpp_missing()
    assert missing is not None and "llama-cpp-python is not installed" in missing and "tunesmith[gguf]" in missing


def test_export_records_the_llama_cpp_check(tuned_run_dir: Path, tmp_path: Path) -> None:
    from tests.helpers.cli import run_cli

    out = tmp_path / "gguf"
    result = run_cli("export", str(tuned_run_dir), "--out", str(out), "--gguf", "q8_0")
    assert result.returncode == 0, result.stderr
    figures = json.loads((out / "export.json").read_text())["checks"]["gguf"]["llama_cpp"]
    assert figures["greedy"]["top_token_agreement"] >= 0.95 and figures["greedy"]["same_stop"] == 4
    assert figures["greedy"]["stopped"] == 4  # the tiny run answers 'positive' / 'negative' and ends the turn
    assert figures["tokenization"]["equal"] == figures["tokenization"]["texts"]
    assert "Loaded in llama.cpp" in (out / "README.md").read_text() and "Loaded in llama.cpp" in result.stderr


# Tiny 2-layer, 64-wide configs per family, with what makes each family's GGUF differ from Llama's set so that a
# mistake would show: Qwen2's q/k/v biases, Qwen3's and Gemma 3's q/k norms, Gemma's +1 norms, Gemma 2's
# soft-capping and query scale (query_pre_attn_scalar 256, not head_dim), Gemma 3's sliding window (shorter than
# the prompts) on one layer and its local/global rotary bases, Phi-3's fused projections, GPT-2's Conv1D weights.
_SHAPE = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
_SMALL = {**_SHAPE, "intermediate_size": 128}
_ROTARY = {"intermediate_size": 128, "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 512}
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "qwen2": {**_ROTARY, "tie_word_embeddings": False},
    "qwen3": {**_ROTARY, "tie_word_embeddings": False},
    "gemma": _ROTARY,
    "gemma2": {**_ROTARY, "query_pre_attn_scalar": 256},
    "gemma3_text": {
        **_ROTARY,
        "layer_types": ["sliding_attention", "full_attention"],
        "sliding_window": 16,
        "final_logit_softcapping": 30.0,
    },
    "phi3": {"intermediate_size": 128, "num_key_value_heads": 2, "max_position_embeddings": 512},
    "gpt2": {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 512},
}


QUERY_KEY = ("q_proj.weight", "k_proj.weight", "qkv_proj.weight", "c_attn.weight")


def _tiny(model_type: str, vocab_size: int) -> Any:
    """A random 2-layer model of ``model_type`` (``TINY_CONFIGS``), 64 wide, with SmolLM2's vocabulary size."""
    import torch

    torch.manual_seed(0)
    sizes = {} if model_type == "gpt2" else _SHAPE
    config = AutoConfig.for_model(
        model_type, vocab_size=vocab_size, pad_token_id=0, **sizes, **TINY_CONFIGS[model_type]
    )
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # norms away from 1 and biases away from 0, so that one written wrongly would show
        for name, parameter in model.named_parameters():
            if parameter.ndim == 1:
                parameter.copy_((0 if name.endswith("bias") else 1) + 0.5 * torch.randn_like(parameter))
            elif name.endswith(QUERY_KEY):  # sharper attention: a wrong query scale (Gemma) changes the replies
                parameter.mul_(4)
    return model


@pytest.mark.parametrize("model_type", list(TINY_CONFIGS))
def test_tiny_decoder_gguf_behaves_in_llama_cpp_as_in_transformers(
    smollm2: tuple[Any, Any, list[Any]], tmp_path: Path, model_type: str
) -> None:
    _, tokenizer, smollm2_replies = smollm2
    model = _tiny(model_type, len(tokenizer))
    prompts = [tokenizer.decode(ids) for ids, _, _ in smollm2_replies]
    replies = greedy_replies(model, tokenizer, prompts)
    for kind in ("f16", "q8_0"):
        path = write_gguf(model, tokenizer, tmp_path / f"model-{kind}.gguf", kind)
        assert _fields(path, "general.architecture") == [gguf_writer.ARCHITECTURES[model_type].gguf.lower()]
        greedy = check_in_llama_cpp(path, tokenizer, kind, replies)["greedy"]
        if kind == "f16":
            assert greedy["top_token_agreement"] == 1.0 and greedy["identical_replies"] == 2, greedy
        else:
            assert greedy["top_token_agreement"] >= 0.95, greedy


def test_what_llama_cpp_would_run_differently_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Untied Gemma 2 embeddings (llama.cpp's gemma2 has no output tensor) and scaled rotary: refused, no file."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    vocab = {"vocab_size": len(tokenizer), "pad_token_id": 0}
    untied = AutoModelForCausalLM.from_config(
        AutoConfig.for_model("gemma2", tie_word_embeddings=False, head_dim=16, **vocab, **_SMALL)
    )
    with pytest.raises(TunesmithError, match="gemma2 needs tied input and output embeddings"):
        write_gguf(untied, tokenizer, tmp_path / "untied.gguf", "f16")
    scaled = AutoModelForCausalLM.from_config(
        AutoConfig.for_model("qwen2", rope_scaling={"rope_type": "linear", "factor": 2.0}, **vocab, **_SMALL)
    )
    with pytest.raises(TunesmithError, match="rope scaling 'linear' is not supported"):
        write_gguf(scaled, tokenizer, tmp_path / "scaled.gguf", "f16")
    assert not list(tmp_path.iterdir())
