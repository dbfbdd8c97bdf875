"""Engine correctness: gradients do not depend on how a step is split into micro-batches; runs are seeded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.conftest import SST2
from tunesmith.config import MethodConfig, TrainingConfig
from tunesmith.data.records import Chat, Message
from tunesmith.engine.batching import step_micro_batches, steps_per_epoch
from tunesmith.engine.loop import backward_window, train
from tunesmith.models.adapt import apply_method
from tunesmith.recipes import sft


def sst2_examples(tokenizer, n: int) -> list:
    lines = (SST2 / "train.tsv").read_text(encoding="utf-8").splitlines()[1 : n + 1]
    chats = [
        Chat(
            [Message("user", f"Sentiment of: {text}"), Message("assistant", "positive" if label == "1" else "negative")]
        )
        for text, label in (line.split("\t") for line in lines)
    ]
    return [sft.encode(chat, tokenizer, "assistant", 128) for chat in chats]


def gradients(model_dir: Path, method: str, split: list[int], examples: list) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model = apply_method(model, MethodConfig(name=method))
    if method == "lora":  # LoRA B starts at zero; give it values so every adapter weight has a gradient
        for name, p in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.02)
    model.train()
    for module in model.modules():  # dropout off: the comparison is about arithmetic, not noise
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    fns = sft.task_fns(AutoTokenizer.from_pretrained(model_dir))
    batches, start = [], 0
    for size in split:
        batches.append(fns.collate(examples[start : start + size]))
        start += size
    trainable = [p for p in model.parameters() if p.requires_grad]
    backward_window(model, batches, fns, Accelerator(cpu=True), trainable)
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("method", ["full", "lora"])
def test_gradients_match_between_8x1_and_2x4(tiny_model_dir: Path, method: str) -> None:
    examples = sst2_examples(AutoTokenizer.from_pretrained(tiny_model_dir), 8)
    lengths = {len(e.input_ids) for e in examples}
    assert len(lengths) > 3, "the test needs sequences of different lengths"
    one_batch = gradients(tiny_model_dir, method, [8], examples)
    accumulated = gradients(tiny_model_dir, method, [2, 2, 2, 2], examples)
    assert one_batch.keys() == accumulated.keys() and one_batch
    for name, grad in one_batch.items():
        assert torch.allclose(grad, accumulated[name], atol=1e-5, rtol=0), name


def test_mean_of_micro_batch_means_would_differ(tiny_model_dir: Path) -> None:
    """Guards the test above: with these examples the naive normalisation gives a visibly different loss."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = sst2_examples(tokenizer, 8)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    fns = sft.task_fns(tokenizer)
    with torch.no_grad():
        sums = [sft.loss(model, fns.collate(examples[i : i + 2])) for i in range(0, 8, 2)]
    token_mean = sum(float(s) for s, _ in sums) / sum(n for _, n in sums)
    mean_of_means = sum(float(s) / n for s, n in sums) / len(sums)
    assert abs(token_mean - mean_of_means) > 1e-4


@pytest.mark.parametrize(("n", "batch", "accum", "world"), [(37, 4, 2, 1), (37, 3, 2, 2), (16, 8, 1, 1)])
def test_each_epoch_visits_every_example_once(n: int, batch: int, accum: int, world: int) -> None:
    per_epoch = steps_per_epoch(n, batch * accum * world)
    for epoch in range(2):
        seen = [
            i
            for step in range(epoch * per_epoch, (epoch + 1) * per_epoch)
            for rank in range(world)
            for micro in step_micro_batches(
                n, step, batch_size=batch, grad_accum=accum, seed=3, world_size=world, rank=rank
            )
            for i in micro
        ]
        assert sorted(seen) == list(range(n))


def test_training_is_seeded_and_lowers_the_loss(tiny_model_dir: Path, tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = sst2_examples(tokenizer, 32)
    cfg = TrainingConfig(max_steps=12, batch_size=8, learning_rate=3e-3, seed=7)

    def run(metrics: Path) -> dict[str, torch.Tensor]:
        torch.manual_seed(cfg.seed)
        model = apply_method(AutoModelForCausalLM.from_pretrained(tiny_model_dir), MethodConfig(name="lora"))
        summary = train(
            model, examples, sft.task_fns(tokenizer), cfg, accelerator=Accelerator(cpu=True), metrics_path=metrics
        )
        assert summary.steps == 12
        return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    first = run(tmp_path / "a.jsonl")
    second = run(tmp_path / "b.jsonl")
    assert all(torch.equal(first[k], second[k]) for k in first)
    logged = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [row["step"] for row in logged] == list(range(1, 13))
    assert logged[-1]["loss"] < logged[0]["loss"]
    assert {"loss", "lr", "tokens_per_s", "grad_norm"} <= logged[0].keys()
