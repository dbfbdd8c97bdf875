"""Prefix tuning on transformers >= 5.25 (models/prefix_compat.py): generation uses the learned prefix.

Without the shim, peft 0.21.2 + transformers 5.25 generate exactly what the base model would, silently. Each test
compares ``generate()`` with greedy decoding through the training forward (the path the loss was computed on),
and checks that plain peft still needs the shim, so the test says when upstream has caught up.
"""

from __future__ import annotations

import pytest
import torch
from peft import PrefixTuningConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

from tunesmith.models.prefix_compat import accept_past_key_values, needs_shim

STEPS = 6


def _llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def _t5() -> T5ForConditionalGeneration:
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )  # fmt: skip
    return T5ForConditionalGeneration(config).eval()


def _prefixed(model: torch.nn.Module, task_type: str, shim: bool) -> torch.nn.Module:
    if shim:
        accept_past_key_values(model)
    tuned = get_peft_model(model, PrefixTuningConfig(task_type=task_type, num_virtual_tokens=4))
    torch.manual_seed(1)
    with torch.no_grad():  # a prefix far from its start, so ignoring it would change the tokens
        for p in tuned.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 3)
    return tuned.eval()


PROMPT = torch.tensor([[5, 6, 7, 8, 9], [3, 4, 11, 12, 13]])


@torch.no_grad()
def _greedy_causal(model: torch.nn.Module) -> torch.Tensor:
    sequence = PROMPT.clone()
    for _ in range(STEPS):
        next_token = model(input_ids=sequence).logits[:, -1].argmax(-1, keepdim=True)
        sequence = torch.cat([sequence, next_token], dim=1)
    return sequence


@torch.no_grad()
def _greedy_seq2seq(model: torch.nn.Module) -> torch.Tensor:
    decoded = torch.zeros(len(PROMPT), 1, dtype=torch.long)  # decoder_start_token_id
    for _ in range(STEPS):
        logits = model(input_ids=PROMPT, decoder_input_ids=decoded).logits[:, -1]
        decoded = torch.cat([decoded, logits.argmax(-1, keepdim=True)], dim=1)
    return decoded


def test_a_prefix_tuned_causal_lm_generates_with_its_prefix() -> None:
    tuned = _prefixed(_llama(), "CAUSAL_LM", shim=True)
    with torch.no_grad():
        generated = tuned.generate(input_ids=PROMPT, max_new_tokens=STEPS, do_sample=False, min_new_tokens=STEPS)
    assert torch.equal(generated, _greedy_causal(tuned))
    base = _llama()
    with torch.no_grad():
        base_tokens = base.generate(input_ids=PROMPT, max_new_tokens=STEPS, do_sample=False, min_new_tokens=STEPS)
    assert not torch.equal(generated, base_tokens)  # the prefix is what changes the answer


def test_a_prefix_tuned_seq2seq_model_generates_with_its_prefix() -> None:
    tuned = _prefixed(_t5(), "SEQ_2_SEQ_LM", shim=True)
    with torch.no_grad():
        generated = tuned.generate(input_ids=PROMPT, max_new_tokens=STEPS, do_sample=False, min_new_tokens=STEPS)
    assert torch.equal(generated, _greedy_seq2seq(tuned))


def test_plain_peft_still_ignores_the_prefix_when_generating() -> None:
    """The upstream bug the shim exists for; when this fails, peft handles `cache` and the shim can go."""
    if not needs_shim(_llama()):
        pytest.fail("this transformers still names the argument past_key_values: remove models/prefix_compat.py")
    tuned = _prefixed(_llama(), "CAUSAL_LM", shim=False)
    with torch.no_grad():
        generated = tuned.generate(input_ids=PROMPT, max_new_tokens=STEPS, do_sample=False, min_new_tokens=STEPS)
        base_tokens = _llama().generate(input_ids=PROMPT, max_new_tokens=STEPS, do_sample=False, min_new_tokens=STEPS)
    assert torch.equal(generated, base_tokens)
    assert not torch.equal(generated, _greedy_causal(tuned))


def test_models_that_still_take_past_key_values_are_left_alone() -> None:
    class Old(torch.nn.Module):
        def forward(self, input_ids: torch.Tensor, past_key_values: object = None) -> torch.Tensor:
            return input_ids

    model = Old()
    before = model.forward
    accept_past_key_values(model)
    assert model.forward == before
