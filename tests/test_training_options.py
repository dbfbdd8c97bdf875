"""Training options: warmup-stable-decay, gradient checkpointing, label smoothing, early stopping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.test_engine import gradients, sst2_examples
from tunesmith.config import ConfigError, MethodConfig, TrainingConfig, validate_config
from tunesmith.engine.loop import build_scheduler, enable_gradient_checkpointing, evaluate_loss, train
from tunesmith.models.adapt import apply_method
from tunesmith.recipes import sft


def test_warmup_stable_decay_warms_holds_then_decays() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    cfg = TrainingConfig(scheduler="warmup-stable-decay", warmup_ratio=0.2, decay_ratio=0.3)
    scheduler = build_scheduler(optimizer, cfg, 10)
    lrs = []
    for _ in range(10):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert lrs[:2] == [0.0, 0.5] and lrs[2:8] == [1.0] * 6
    assert 1.0 > lrs[8] > lrs[9] > 0.0 and scheduler.get_last_lr()[0] == 0.0


def test_gradient_checkpointing_changes_memory_not_gradients(tiny_model_dir: Path) -> None:
    examples = sst2_examples(AutoTokenizer.from_pretrained(tiny_model_dir), 8)
    plain, plain_loss = gradients(tiny_model_dir, "lora", [4, 4], examples, pack_len=128)
    checkpointed, ckpt_loss = gradients(tiny_model_dir, "lora", [4, 4], examples, pack_len=128, checkpointing=True)
    assert abs(plain_loss - ckpt_loss) <= 1e-6
    for name, grad in plain.items():
        assert torch.allclose(grad, checkpointed[name], atol=1e-6, rtol=0), name


def test_gradient_checkpointing_keeps_fewer_activations(tiny_model_dir: Path) -> None:
    def saved_bytes(checkpointing: bool) -> int:
        model = apply_method(AutoModelForCausalLM.from_pretrained(tiny_model_dir), MethodConfig(name="lora"))
        if checkpointing:
            enable_gradient_checkpointing(model)
        model.train()
        total = [0]

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            total[0] += tensor.numel() * tensor.element_size()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            model(input_ids=torch.arange(5, 69)[None]).logits.sum()
        return total[0]

    assert saved_bytes(True) < 0.5 * saved_bytes(False)


def test_label_smoothing_raises_the_loss_of_a_confident_model(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    batch = sft.collate_packed(sst2_examples(tokenizer, 4), tokenizer.pad_token_id, 128)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        plain, n = sft.loss(model, batch)
        smoothed, m = sft.task_fns(tokenizer, 128, label_smoothing=0.1).loss(model, batch)
    assert n == m and abs(float(plain) - float(smoothed)) > 1e-3


def test_early_stopping_stops_and_restores_the_best_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = sst2_examples(tokenizer, 40)
    train_examples, val_examples = examples[:32], examples[32:]
    cfg = TrainingConfig(
        max_steps=40, batch_size=4, learning_rate=5e-2, eval_every=1, early_stopping_patience=2, scheduler="constant"
    )
    torch.manual_seed(0)
    model = apply_method(AutoModelForCausalLM.from_pretrained(tiny_model_dir), MethodConfig(name="full"))
    fns = sft.task_fns(tokenizer, 128)
    accelerator = Accelerator(cpu=True)
    metrics = tmp_path / "metrics.jsonl"
    summary = train(
        model, train_examples, fns, cfg, accelerator=accelerator, metrics_path=metrics, val_examples=val_examples
    )
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert summary.steps < 40 and "early_stop" in rows[-1]
    vals = [r["val_loss"] for r in rows]
    best = min(vals)
    assert vals.index(best) == len(vals) - 3 and all(v >= best for v in vals[-2:])
    assert summary.val_loss == pytest.approx(best, abs=1e-6)
    assert evaluate_loss(model, val_examples, fns, 4, accelerator) == pytest.approx(best, abs=1e-5)  # restored


def test_early_stopping_needs_validation_loss() -> None:
    raw = {"model": {"name": "x"}, "data": {"train": "t.jsonl"}, "eval": {"enabled": False}}
    with pytest.raises(ConfigError, match="early_stopping_patience needs validation loss"):
        validate_config({**raw, "training": {"early_stopping_patience": 3}})


def test_neftune_perturbs_training_only_and_is_removed_afterwards(tiny_model_dir: Path, tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = sst2_examples(tokenizer, 8)

    def first_loss(alpha: float | None) -> tuple[float, torch.nn.Module]:
        torch.manual_seed(0)
        model = apply_method(AutoModelForCausalLM.from_pretrained(tiny_model_dir), MethodConfig(name="full"))
        cfg = TrainingConfig(max_steps=1, batch_size=8, neftune_alpha=alpha)
        metrics = tmp_path / f"{alpha}.jsonl"
        train(
            model, examples, sft.task_fns(tokenizer, 128), cfg, accelerator=Accelerator(cpu=True), metrics_path=metrics
        )
        return json.loads(metrics.read_text().splitlines()[0])["loss"], model

    plain, _ = first_loss(None)
    again, _ = first_loss(None)
    noisy, model = first_loss(5.0)
    assert plain == again and abs(noisy - plain) > 1e-4  # the same weights, a different loss: the noise
    model.train()
    ids = torch.tensor([[5, 6, 7, 8]])
    embed = model.get_input_embeddings()
    assert torch.equal(embed(ids), embed(ids))  # the hook is gone once training returns
