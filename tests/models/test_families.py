"""The family table (models/families.py) against the architectures themselves: every name it lists is a projection
of that architecture, and LoRA's ``all-linear`` resolves to exactly what peft's own ``all-linear`` would pick."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tunesmith.core.config import MethodConfig
from tunesmith.models.adapt import apply_method
from tunesmith.models.families import FAMILIES, out_features, targeted

SIZES = {"vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "pad_token_id": 0}
DECODERS = {
    "llama": ("LlamaConfig", {"intermediate_size": 64}),
    "mistral": ("MistralConfig", {"intermediate_size": 64}),
    "qwen2": ("Qwen2Config", {"intermediate_size": 64}),
    "qwen3": ("Qwen3Config", {"intermediate_size": 64, "head_dim": 16}),
    "gemma": ("GemmaConfig", {"intermediate_size": 64, "head_dim": 16}),
    "gemma2": ("Gemma2Config", {"intermediate_size": 64, "head_dim": 16}),
    "gemma3_text": ("Gemma3TextConfig", {"intermediate_size": 64, "head_dim": 16}),
    "phi3": ("Phi3Config", {"intermediate_size": 64, "eos_token_id": 1}),
    "phi": ("PhiConfig", {"intermediate_size": 64}),
    "gpt2": ("GPT2Config", {"vocab_size": 64, "n_embd": 32, "n_layer": 1, "n_head": 2}),
}


def _model(model_type: str) -> nn.Module:
    import transformers

    class_name, settings = DECODERS[model_type]
    config = getattr(transformers, class_name)(**({} if model_type == "gpt2" else SIZES), **settings)
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config)


def test_every_decoder_family_is_covered() -> None:
    assert {name for name, family in FAMILIES.items() if family.lora is not None} == set(DECODERS)


@pytest.mark.parametrize("model_type", list(DECODERS))
def test_family_names_are_projections_of_the_architecture(model_type: str) -> None:
    model = _model(model_type)
    assert model.config.model_type == model_type
    family = FAMILIES[model_type]
    projections = [name for name, module in model.named_modules() if out_features(module) is not None]
    for name in (*family.lora, *family.outputs, *family.ia3):
        assert any(targeted(p, [name]) for p in projections), f"{model_type}: no projection named {name}"
    assert not any(targeted("lm_head", [name]) for name in family.lora)  # the head stays out, as in peft

    import peft

    ours = apply_method(_model(model_type), MethodConfig(name="lora")).peft_config["default"]
    theirs = peft.get_peft_model(model, peft.LoraConfig(target_modules="all-linear", task_type="CAUSAL_LM"))
    picked = {name.rsplit(".", 1)[-1] for name in theirs.peft_config["default"].target_modules}  # may be full paths
    assert set(ours.target_modules) == picked
    assert ours.fan_in_fan_out == (model_type == "gpt2")
