"""training.precision: `auto` picks bf16 on a CPU only where the processor has bf16 instructions, says why, and bf16
autocast computes the same loss and gradients as fp32 within bf16's rounding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers.training import sst2_examples
from tunesmith.core.environment import cpu_flags
from tunesmith.engine.precision import BF16_CPU_FLAGS, Precision, choose_precision, computing_in

# bf16 keeps 8 bits of mantissa: a relative error of 2^-8 per rounding, a few roundings deep in a 2-layer model.
LOSS_RTOL = 2e-2
GRAD_COSINE = 0.99


def test_an_explicit_precision_is_kept_and_auto_follows_the_processor() -> None:
    assert choose_precision("fp32") == Precision("fp32", "training.precision is fp32")
    assert choose_precision("bf16").name == "bf16"
    auto = choose_precision("auto")
    if torch.cuda.is_available():
        pytest.skip("the CPU rule is checked on CPU machines")  # CI has no GPU; a GPU machine checks its own rule
    fast = any(flag in cpu_flags() for flag in BF16_CPU_FLAGS)
    assert auto.name == ("bf16" if fast else "fp32")
    assert ("AVX512_BF16" in auto.reason or "AMX" in auto.reason) if fast else "no AVX512_BF16 or AMX" in auto.reason


def _loss_and_grads(model_dir: Path, precision: Precision) -> tuple[float, dict[str, torch.Tensor]]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.recipes import sft

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    fns = sft.task_fns(tokenizer)
    batch = fns.collate(sst2_examples(tokenizer, 8))
    with computing_in(precision, "cpu"):
        loss, count = fns.loss(model, batch)
    (loss / count).backward()
    grads = {n: p.grad.float().clone() for n, p in model.named_parameters() if p.grad is not None}
    return float((loss / count).detach()), grads


def test_bf16_autocast_gives_the_fp32_loss_and_gradients_within_bf16_rounding(tiny_model_dir: Path) -> None:
    fp32_loss, fp32_grads = _loss_and_grads(tiny_model_dir, Precision("fp32", "test"))
    bf16_loss, bf16_grads = _loss_and_grads(tiny_model_dir, Precision("bf16", "test"))
    assert bf16_loss != fp32_loss  # autocast took effect: bf16 rounding shows in the last digits
    assert bf16_loss == pytest.approx(fp32_loss, rel=LOSS_RTOL)
    assert fp32_grads.keys() == bf16_grads.keys()
    for name, grad in fp32_grads.items():
        cosine = torch.nn.functional.cosine_similarity(grad.flatten(), bf16_grads[name].flatten(), dim=0)
        assert cosine > GRAD_COSINE, (name, float(cosine))
