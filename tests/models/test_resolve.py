"""Model resolution: local folder, GGUF alias, .gguf file, hub id (offline), and clear errors for the rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunesmith.core.config import ModelConfig
from tunesmith.core.errors import ModelNotFoundError
from tunesmith.models.load import load_causal_lm, load_tokenizer
from tunesmith.models.resolve import _smollm2_gguf, resolve_model


def test_local_folder_resolves_and_loads(tiny_model_dir: Path) -> None:
    resolved = resolve_model(str(tiny_model_dir))
    assert resolved.kind == "local"
    model = load_causal_lm(ModelConfig(name=str(tiny_model_dir)), resolved)
    assert model.config.num_hidden_layers == 2


def test_folder_without_config_is_explained(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"has no config\.json"):
        resolve_model(str(tmp_path))


def test_missing_local_path_says_what_was_tried(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model(str(tmp_path / "nope"))
    message = str(info.value)
    assert "Tried:" in message and "smollm2-135m" in message and "fix:" in message


def test_unknown_hub_id_offline_names_what_was_tried() -> None:
    resolved = resolve_model("tunesmith-tests/no-such-model")
    assert resolved.kind == "hub"
    with pytest.raises(ModelNotFoundError) as info:
        load_tokenizer(ModelConfig(name="tunesmith-tests/no-such-model"), resolved)
    assert "HF_HUB_OFFLINE=1" in str(info.value)
    assert "tunesmith-tests/no-such-model" in str(info.value)


def test_smollm2_alias_is_a_real_instruct_model(smollm2_dir: Path) -> None:
    assert (smollm2_dir / "model.safetensors").is_file()
    model = load_causal_lm(ModelConfig(name="smollm2-135m"))
    tokenizer = load_tokenizer(ModelConfig(name="smollm2-135m"))
    assert type(model).__name__ == "LlamaForCausalLM"
    assert 134e6 < sum(p.numel() for p in model.parameters()) < 135e6
    assert tokenizer.eos_token == "<|im_end|>" and "<|im_start|>" in tokenizer.chat_template
    assert getattr(model, "hf_quantizer", None) is None  # trainable and savable, not a GGUF-quantized model


def test_gguf_file_resolves_to_the_cached_folder(smollm2_dir: Path) -> None:
    resolved = resolve_model(str(_smollm2_gguf()))
    assert resolved.kind == "gguf"
    assert Path(resolved.location) == smollm2_dir  # converted once, then reused
