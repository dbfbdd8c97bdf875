"""Engine correctness: gradients do not depend on how a step is split into micro-batches; runs are seeded."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.helpers.training import gradients, sst2_examples
from tunesmith.core.config import MethodConfig, TrainingConfig
from tunesmith.engine import TaskFns, TrainingError, train
from tunesmith.engine.batching import step_micro_batches, steps_per_epoch
from tunesmith.models.adapt import apply_method
from tunesmith.recipes import sft


@pytest.mark.parametrize("method", ["full", "lora"])
def test_gradients_match_between_8x1_and_2x4(tiny_model_dir: Path, method: str) -> None:
    examples = sst2_examples(AutoTokenizer.from_pretrained(tiny_model_dir), 8)
    lengths = {len(e.input_ids) for e in examples}
    assert len(lengths) > 3, "the test needs sequences of different lengths"
    one_batch, _ = gradients(tiny_model_dir, method, [8], examples)
    accumulated, _ = gradients(tiny_model_dir, method, [2, 2, 2, 2], examples)
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


def poisoned(fns, bad_calls: set[int]):
    """The sft loss, made NaN on the given calls (1-based): a real non-finite loss in the real loop."""
    calls = {"n": 0}

    def loss(model, batch):
        calls["n"] += 1
        loss_sum, n = fns.loss(model, batch)
        return (loss_sum * float("nan") if calls["n"] in bad_calls else loss_sum), n

    return TaskFns(fns.collate, fns.count_targets, loss)


def test_non_finite_steps_are_skipped_then_the_run_stops(tiny_model_dir: Path, tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = sst2_examples(tokenizer, 16)
    cfg = TrainingConfig(max_steps=5, batch_size=4, learning_rate=1e-2, save_every=1, keep_checkpoints=9)

    def run(max_bad: int, folder: Path) -> torch.nn.Module:
        torch.manual_seed(0)
        model = apply_method(AutoModelForCausalLM.from_pretrained(tiny_model_dir), MethodConfig(name="full"))
        fns = poisoned(sft.task_fns(tokenizer), {2, 3})  # steps 2 and 3 have a NaN loss
        limited = cfg.model_copy(update={"max_bad_steps": max_bad})
        options = {"metrics_path": folder / "metrics.jsonl", "checkpoint_dir": folder / "checkpoints"}
        with pytest.raises(TrainingError) if max_bad < 2 else contextlib.nullcontext() as failure:
            train(model, examples, fns, limited, accelerator=Accelerator(cpu=True), **options)
        if failure is not None:
            message = str(failure.value)
            assert "max_bad_steps=1" in message and "step-1" in message and "learning_rate" in message
        return model

    run(2, tmp_path / "tolerated")
    rows = [json.loads(line) for line in (tmp_path / "tolerated" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rows[1:3]] == ["nan", "nan"] and rows[-1]["bad_steps"] == 2
    assert rows[0]["lr"] == rows[1]["lr"] == rows[2]["lr"] != rows[3]["lr"]  # no scheduler step when skipped
    saved = sorted(p.name for p in (tmp_path / "tolerated" / "checkpoints").iterdir())
    assert saved == ["step-1", "step-4", "step-5"]  # only steps that updated the weights are checkpoints

    stopped = run(1, tmp_path / "stopped")
    assert sorted(p.name for p in (tmp_path / "stopped" / "checkpoints").iterdir()) == ["step-1"]
    good = load_file(tmp_path / "stopped" / "checkpoints" / "step-1" / "trainable.safetensors")
    now = dict(stopped.named_parameters())
    assert good and all(torch.equal(good[k], now[k].detach()) for k in good)  # the NaN steps changed nothing


def test_resume_in_process_matches_an_uninterrupted_run(tiny_model_dir: Path, tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = sst2_examples(tokenizer, 20)
    cfg = TrainingConfig(max_steps=9, batch_size=4, grad_accum=2, learning_rate=3e-3, save_every=3, seed=5)

    def run(folder: Path, resume: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(cfg.seed)
        model = apply_method(AutoModelForCausalLM.from_pretrained(tiny_model_dir), MethodConfig(name="lora"))
        fns = sft.task_fns(tokenizer, 64)
        metrics, checkpoints = folder / "metrics.jsonl", folder / "checkpoints"
        accelerator = Accelerator(cpu=True)
        train(
            model,
            examples,
            fns,
            cfg,
            accelerator=accelerator,
            metrics_path=metrics,
            checkpoint_dir=checkpoints,
            resume=resume,
        )
        return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    straight = run(tmp_path / "a", resume=False)
    interrupted = tmp_path / "b"
    run(interrupted, resume=False)
    shutil.rmtree(interrupted / "checkpoints" / "step-9")  # as if killed after step 7 (LoRA dropout is on)
    lines = (interrupted / "metrics.jsonl").read_text().splitlines()
    (interrupted / "metrics.jsonl").write_text("\n".join(lines[:7]) + "\n{torn")
    resumed = run(interrupted, resume=True)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    rows = [json.loads(line)["step"] for line in (interrupted / "metrics.jsonl").read_text().splitlines()]
    assert rows == list(range(1, 10))
