"""Preference tuning end to end through the real CLI with a tiny model: DPO (LoRA, one base in memory), KTO from a
rated chat log, ORPO / SimPO and full fine-tuning with a frozen reference copy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers.cli import run_cli
from tests.helpers.configs import pref_config
from tests.helpers.training import unique_storage_numel
from tunesmith.core.config import validate_config
from tunesmith.data.records import Message, Preference
from tunesmith.pipeline.run import Run
from tunesmith.recipes import preference


def test_dpo_run_learns_the_preference_and_reports_it(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = pref_config(tmp_path, tiny_model_dir, "dpo")
    result = run_cli("run", str(config))
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "runs" / "dpo"
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    tuned, base = metrics["tuned"], metrics["base"]
    assert tuned["reward_accuracy"] == 1.0 and tuned["reward_margin"] > 0
    assert tuned["preference_accuracy"] > base["preference_accuracy"]
    assert tuned["kl_from_reference"] > 0
    losses = [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0] < 0.7  # starts at log 2 (policy = reference), falls as the margin grows
    assert (run_dir / "model" / "adapter_model.safetensors").is_file()
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "reward_accuracy" in html or "reward accuracy" in html


def test_lora_reference_is_the_base_with_adapters_off(tiny_model_dir: Path, tmp_path: Path) -> None:
    """One copy of the base weights: the reference log-probs come from the same model with adapters disabled."""
    from transformers import AutoModelForCausalLM

    from tunesmith.models.adapt import apply_method

    cfg = validate_config(yaml.safe_load(pref_config(tmp_path, tiny_model_dir, "dpo").read_text()))
    base_numel = unique_storage_numel(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    model = apply_method(preference.load_model(cfg), cfg.method)
    adapter_numel = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert unique_storage_numel(model) == base_numel + adapter_numel

    from tunesmith.models.load import load_tokenizer

    tokenizer = load_tokenizer(cfg.model)
    record = Preference([Message("user", "Sentiment of: fine")], "positive", "negative")
    batch = preference.collate([preference.encode(record, tokenizer, 64)], tokenizer.pad_token_id)
    with torch.no_grad():
        for p in (p for n, p in model.named_parameters() if "lora_B" in n):
            p.add_(0.5)  # the adapter now changes the outputs
    loss_fn = preference.PreferenceLoss(cfg)
    reference = loss_fn.reference.logps(model, batch)
    assert loss_fn.reference.copy is None  # no second model was loaded
    assert unique_storage_numel(model) == base_numel + adapter_numel
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert torch.allclose(reference, preference.logps(plain, batch)[0], atol=1e-5)
    assert not torch.allclose(reference, preference.logps(model, batch)[0], atol=1e-3)


def test_prompt_is_shared_and_only_completion_tokens_count(tiny_model_dir: Path) -> None:
    from tunesmith.core.config import ModelConfig
    from tunesmith.models.load import load_tokenizer

    tokenizer = load_tokenizer(ModelConfig(name=str(tiny_model_dir)))
    record = Preference([Message("user", "Sentiment of: a fine film")], "positive", "negative !")
    example = preference.encode(record, tokenizer, 64)
    prompt_text = tokenizer.decode(example.prompt)
    assert prompt_text.endswith("<|im_start|>assistant\n") and "fine film" in prompt_text
    assert tokenizer.decode(example.completions[0]) == "positive<|im_end|>"
    assert tokenizer.decode(example.completions[1]) == "negative !<|im_end|>"
    batch = preference.collate([example], tokenizer.pad_token_id)
    n = len(example.prompt)
    assert batch["input_ids"][0, :n].tolist() == batch["input_ids"][1, :n].tolist() == example.prompt
    assert (batch["labels"][:, :n] == -100).all()
    assert (batch["labels"][0] != -100).sum() == len(example.completions[0])


@pytest.mark.parametrize(("task", "method"), [("orpo", "lora"), ("simpo", "ia3")])
def test_reference_free_tasks_train_save_and_reload(task: str, method: str, tiny_model_dir: Path, tmp_path: Path):
    config = pref_config(
        tmp_path, tiny_model_dir, task, method={"name": method}, training={"max_steps": 8}, eval={"enabled": False}
    )
    if method != "lora":
        text = yaml.safe_load(config.read_text())
        del text["method"]["lora"]
        config.write_text(yaml.safe_dump(text))
    run = Run.from_file(config)
    run.open()
    run.prepare()
    trained = run.train().eval()
    rows = [json.loads(line) for line in run.dir.metrics.read_text().splitlines()]
    assert rows[-1]["loss"] < rows[0]["loss"]
    trainable = sum(p.numel() for p in trained.parameters() if p.requires_grad)
    marker = "lora_" if method == "lora" else "ia3_"
    assert trainable == sum(p.numel() for n, p in trained.named_parameters() if marker in n) > 0
    assert json.loads(run.dir.state.read_text())["stages"]["train"]["trainable_parameters"] == trainable
    reloaded, _ = run.load_tuned()
    ids = torch.tensor([[5, 17, 42, 99, 3, 250]])
    with torch.no_grad():
        assert torch.allclose(trained(input_ids=ids).logits, reloaded(input_ids=ids).logits, atol=1e-5)


def test_full_fine_tuning_uses_a_frozen_reference_copy(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = pref_config(
        tmp_path, tiny_model_dir, "dpo", method={"name": "full"}, training={"max_steps": 6, "learning_rate": 1e-3}
    )
    text = yaml.safe_load(config.read_text())
    del text["method"]["lora"]
    config.write_text(yaml.safe_dump(text))
    run = Run.from_file(config)
    metrics = run.run()
    assert metrics["tuned"]["reward_accuracy"] == 1.0
    assert (run.dir.model / "model.safetensors").is_file()
