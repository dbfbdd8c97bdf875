"""`tunesmith estimate`: exact parameter counts, memory that moves the way the settings say, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoConfig, AutoModelForCausalLM

from tests.helpers.cli import run_cli
from tests.helpers.configs import write_tiny_config
from tunesmith.core.config import MethodConfig, TrainingConfig
from tunesmith.engine.estimate import count_parameters, estimate
from tunesmith.models.adapt import apply_method

LENGTHS = [40, 120, 64, 300, 90, 250, 33, 180] * 8
TARGETS = [n // 2 for n in LENGTHS]


def test_parameter_counts_match_the_real_model_for_each_method(tiny_model_dir: Path) -> None:
    config = AutoConfig.from_pretrained(tiny_model_dir)
    for method in ({"name": "full"}, {"name": "lora"}, {"name": "lora", "lora": {"r": 4}}, {"name": "ia3"}):
        cfg = MethodConfig.model_validate(method)
        model = apply_method(AutoModelForCausalLM.from_pretrained(tiny_model_dir), cfg)
        real = (
            sum(p.numel() for p in model.parameters()),
            sum(p.numel() for p in model.parameters() if p.requires_grad),
        )
        assert count_parameters(config, cfg) == real, method


def test_memory_follows_method_batch_and_checkpointing(tiny_model_dir: Path) -> None:
    config = AutoConfig.from_pretrained(tiny_model_dir)

    def peak(method: str = "lora", **training: object) -> dict:
        cfg = TrainingConfig(**{"batch_size": 8, "max_seq_len": 512, **training})
        result = estimate(config, MethodConfig(name=method), cfg, LENGTHS, TARGETS, device="cpu", throughput=1e8)
        return result.to_dict()

    lora, full = peak(), peak("full")
    assert full["memory_gib"]["optimizer"] > 10 * lora["memory_gib"]["optimizer"]  # Adam state of every weight
    whole = peak(micro_batch_size=8)  # all 8 examples of a step computed together
    assert peak(batch_size=16, micro_batch_size=16)["memory_gib"]["activations"] > whole["memory_gib"]["activations"]
    assert peak(micro_batch_size=2)["memory_gib"]["activations"] < whole["memory_gib"]["activations"]
    # by default a CPU runs one packed row at a time: the activations of the longest row only
    assert lora["memory_gib"]["activations"] < 0.5 * whole["memory_gib"]["activations"]
    assert lora["largest_micro_batch_positions"] <= 512
    assert peak(gradient_checkpointing=True)["memory_gib"]["activations"] < 0.6 * lora["memory_gib"]["activations"]
    smoothing = peak(label_smoothing=0.1)  # full logits: every position's vocabulary row is stored
    assert smoothing["memory_gib"]["logits"] > 0 and smoothing["peak_gib"] >= lora["peak_gib"]
    assert lora["steps_per_epoch"] == 8 and lora["tokens_per_epoch"] == sum(LENGTHS)
    # time: more work per epoch (full fine-tuning's weight gradients) takes longer at the same throughput
    assert full["seconds_per_epoch"] > lora["seconds_per_epoch"] > 0


def test_estimate_command_prints_memory_and_time(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = write_tiny_config(tmp_path, tiny_model_dir)
    result = run_cli("estimate", str(config), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["device"] == "cpu" and data["steps_per_epoch"] == 8  # 32 rows / batch 4
    assert data["peak_gib"] > 0 and data["seconds_per_epoch"] > 0 and data["trainable"] < data["parameters"]
