"""Target-only logits: the same loss and gradients as the full vocabulary projection, for every method."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from tests.helpers.training import sst2_examples
from tunesmith.core.config import MethodConfig
from tunesmith.engine import lm_loss
from tunesmith.engine.lm_loss import capture_final_hidden, causal_lm_loss, full_logits_loss, linear_cross_entropy
from tunesmith.engine.packing import model_inputs
from tunesmith.models.adapt import apply_method
from tunesmith.recipes import sft

METHODS = [
    {"name": "full"},
    {"name": "freeze", "freeze": {"train_layers": 1}},
    {"name": "lora"},
    {"name": "lora", "lora": {"dora": True}},
    {"name": "lora", "lora": {"target_modules": ["q_proj", "v_proj", "lm_head"]}},  # head is a LoRA module
    {"name": "ia3"},
    {"name": "adapter", "adapter": {"size": 8}},
    {"name": "prefix", "prefix": {"num_virtual_tokens": 3}},
    {"name": "prompt", "prompt": {"num_virtual_tokens": 3}},  # virtual tokens: falls back to full logits
]


def _model(model_dir: Path, method: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    model = apply_method(AutoModelForCausalLM.from_pretrained(model_dir), MethodConfig.model_validate(method))
    with torch.no_grad():  # adapters that start as the identity get values, so every weight has a gradient
        for name, p in model.named_parameters():
            if p.requires_grad and ("lora_B" in name or "up" in name):
                p.normal_(std=0.05)
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def _loss_and_grads(model: torch.nn.Module, batch: dict, fast: bool) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    if fast:
        loss, _ = causal_lm_loss(model, model_inputs(model, batch), batch["labels"])
    else:
        loss = full_logits_loss(model(**model_inputs(model, batch)).logits, batch["labels"])
    loss.backward()
    return float(loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


# Virtual-token methods (prefix, prompt) train on padded batches only, so they have no packed case.
CASES = [
    pytest.param(method, packed, id=f"{str(method)[9:40]}-{'packed' if packed else 'padded'}")
    for method in METHODS
    for packed in (False, True)
    if not (packed and method["name"] in ("prefix", "prompt"))
]


@pytest.mark.parametrize(("method", "packed"), CASES)
def test_target_only_logits_equal_the_full_computation(tiny_model_dir: Path, method: dict, packed: bool) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = sst2_examples(tokenizer, 6)
    batch = sft.collate_packed(examples, tokenizer.pad_token_id, 96) if packed else sft.collate(examples, 0)
    model = _model(tiny_model_dir, method)
    full_loss, full_grads = _loss_and_grads(model, batch, fast=False)
    fast_loss, fast_grads = _loss_and_grads(model, batch, fast=True)
    assert abs(fast_loss - full_loss) <= 1e-5 * max(1.0, abs(full_loss))
    assert full_grads.keys() == fast_grads.keys() and full_grads
    for name, grad in full_grads.items():
        assert (fast_grads[name] - grad).abs().max() <= 1e-5, name
    with capture_final_hidden(model, batch["labels"].size(1)) as captured, torch.no_grad():
        logits = model(**model_inputs(model, batch)).logits
    # the fast path really ran (the head saw no positions), except where virtual tokens force the full logits
    assert ("hidden" in captured) == (method["name"] != "prompt")
    assert (logits.size(1) == 0) == (method["name"] != "prompt")


def test_tied_embeddings_and_a_biased_head_get_exact_gradients() -> None:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, tie_word_embeddings=True,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    labels = torch.randint(0, 300, (3, 20))
    labels[:, :7] = -100
    batch = {"input_ids": torch.randint(0, 300, (3, 20)), "attention_mask": torch.ones(3, 20, dtype=torch.long)}
    batch["labels"] = labels
    full = _loss_and_grads(model, batch, fast=False)
    fast = _loss_and_grads(model, batch, fast=True)
    assert abs(full[0] - fast[0]) <= 1e-5 * full[0]
    for name, grad in full[1].items():
        assert (fast[1][name] - grad).abs().max() <= 1e-5, name
    # a head with a bias, chunked into pieces of 7 rows: still the plain cross-entropy sum
    head = torch.nn.Linear(32, 300, bias=True)
    hidden = torch.randn(40, 32, requires_grad=True)
    targets = torch.randint(0, 300, (40,))
    lm_loss.CHUNK_ELEMENTS, saved = 7 * 300, lm_loss.CHUNK_ELEMENTS
    try:
        fused = linear_cross_entropy(hidden, head, targets)
        fused_grads = torch.autograd.grad(fused * 0.5, [hidden, head.weight, head.bias])
    finally:
        lm_loss.CHUNK_ELEMENTS = saved
    plain = torch.nn.functional.cross_entropy(head(hidden), targets, reduction="sum")
    plain_grads = torch.autograd.grad(plain * 0.5, [hidden, head.weight, head.bias])
    assert abs(float(fused) - float(plain)) <= 1e-4
    for a, b in zip(fused_grads, plain_grads, strict=True):
        assert (a - b).abs().max() <= 1e-5


def test_label_smoothing_takes_the_full_path(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    batch = sft.collate(sst2_examples(tokenizer, 4), 0)
    model = _model(tiny_model_dir, {"name": "lora"})
    with torch.no_grad():
        smoothed, n = causal_lm_loss(model, model_inputs(model, batch), batch["labels"], label_smoothing=0.1)
        plain, _ = causal_lm_loss(model, model_inputs(model, batch), batch["labels"])
        logits = model(**model_inputs(model, batch)).logits
    assert n == int((batch["labels"][:, 1:] != -100).sum())
    assert abs(float(smoothed) - float(full_logits_loss(logits, batch["labels"], 0.1))) <= 1e-4
    assert abs(float(smoothed) - float(plain)) > 1e-3  # smoothing really applied
