"""Training options: schedules, gradient checkpointing, label smoothing, early stopping, dropout, trackers, memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.helpers.training import gradients, sst2_examples
from tunesmith.core.config import ConfigError, MethodConfig, TrainingConfig, validate_config
from tunesmith.engine import build_scheduler, enable_gradient_checkpointing, evaluate_loss, train
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


def test_reduce_on_plateau_lowers_the_lr_only_when_validation_stalls(tiny_model_dir: Path, tmp_path: Path) -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    cfg = TrainingConfig(scheduler="reduce_on_plateau", eval_every=1, plateau_factor=0.5, plateau_patience=1)
    scheduler = build_scheduler(optimizer, cfg, 10)
    for val in (None, 3.0, None, 2.0, 2.5, 2.4, None, 2.6):  # None: an optimizer step without evaluation
        scheduler.step(val)
    assert scheduler.get_last_lr()[0] == 0.5  # 2.5: 1 stalled evaluation, tolerated; 2.4: 2, halved; 2.6: 1 again
    scheduler.step(2.7)
    assert scheduler.get_last_lr()[0] == 0.25
    with pytest.raises(ConfigError, match="reduce_on_plateau follows the validation loss"):
        raw = {"model": {"name": "x"}, "data": {"train": "t.jsonl"}, "eval": {"enabled": False}}
        validate_config({**raw, "training": {"scheduler": "reduce_on_plateau"}})
    # in the loop: a learning rate so high that validation loss does not improve gets cut
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = sst2_examples(tokenizer, 24)
    model = apply_method(AutoModelForCausalLM.from_pretrained(tiny_model_dir), MethodConfig(name="full"))
    cfg = TrainingConfig(
        max_steps=8, batch_size=4, learning_rate=0.5, eval_every=1, scheduler="reduce_on_plateau", trackers=[]
    )
    metrics = tmp_path / "metrics.jsonl"
    fns = sft.task_fns(tokenizer, 128)
    train(model, examples[:16], fns, cfg, accelerator=Accelerator(cpu=True), metrics_path=metrics,
          val_examples=examples[16:])  # fmt: skip
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    vals, lrs = [r["val_loss"] for r in rows], [r["lr"] for r in rows]
    assert lrs[0] == 0.5 and min(lrs) < 0.5
    first_cut = next(i for i, lr in enumerate(lrs) if lr < 0.5)
    assert vals[first_cut] >= min(vals[:first_cut])  # cut right after an evaluation that did not improve


def test_dropout_override_makes_training_forwards_random(tiny_model_dir: Path) -> None:
    from tunesmith.engine.model_options import override_dropout

    ids = torch.arange(5, 40)[None]

    def two_forwards(p: float | None) -> tuple[torch.Tensor, torch.Tensor, torch.nn.Module]:
        model = apply_method(AutoModelForCausalLM.from_pretrained(tiny_model_dir), MethodConfig(name="lora"))
        if p is not None:
            override_dropout(model, p)
        model.train()
        with torch.no_grad():
            return model(input_ids=ids).logits, model(input_ids=ids).logits, model

    a, b, _ = two_forwards(None)
    assert torch.equal(a, b)  # the tiny Llama's attention dropout is 0, and LoRA's own dropout is on the input only
    a, b, model = two_forwards(0.3)
    assert not torch.allclose(a, b)
    assert model.get_base_model().config.attention_dropout == 0.3
    lora_dropout = next(m for n, m in model.named_modules() if n.endswith("lora_dropout.default"))
    assert lora_dropout.p == 0.05  # the method's setting is left alone


def test_trackers_write_tensorboard_events_and_refuse_missing_ones(tiny_model_dir: Path, tmp_path: Path) -> None:
    from tunesmith.engine import TrainingError

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = sst2_examples(tokenizer, 8)
    model = apply_method(AutoModelForCausalLM.from_pretrained(tiny_model_dir), MethodConfig(name="lora"))
    fns = sft.task_fns(tokenizer, 128)
    metrics = tmp_path / "metrics.jsonl"
    train(model, examples, fns, TrainingConfig(max_steps=2, batch_size=4), accelerator=Accelerator(cpu=True),
          metrics_path=metrics)  # fmt: skip
    events = list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))
    assert events and b"train/loss" in events[0].read_bytes()
    import importlib.util

    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(TrainingError, match="wandb is not installed"):
            cfg = TrainingConfig(max_steps=1, batch_size=4, trackers=["wandb"])
            train(model, examples, fns, cfg, accelerator=Accelerator(cpu=True), metrics_path=tmp_path / "m2.jsonl")


def test_out_of_memory_names_the_settings_and_auto_finds_the_largest_micro_batch(tiny_model_dir: Path) -> None:
    from tunesmith.engine.memory import OutOfMemory, find_micro_batch

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = sst2_examples(tokenizer, 8)
    model = apply_method(AutoModelForCausalLM.from_pretrained(tiny_model_dir), MethodConfig(name="lora"))
    real = sft.task_fns(tokenizer)  # padded: one row per example

    def too_big(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
        # CPU training cannot run out of GPU memory; this is the exception CUDA raises, past 3 rows
        if batch["input_ids"].size(0) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real.loss(model, batch)

    fns = type(real)(real.collate, real.count_targets, too_big)
    cfg = TrainingConfig(max_steps=1, batch_size=8, trackers=[], packing=False)
    with pytest.raises(OutOfMemory) as caught:
        train(model, examples, fns, cfg, accelerator=Accelerator(cpu=True))
    message = str(caught.value)
    for setting in (
        "micro_batch_size: auto",
        "batch_size (now 8)",
        "grad_accum",
        "max_seq_len",
        "gradient_checkpointing",
    ):
        assert setting in message
    tried = []

    def fits(n: int) -> None:
        tried.append(n)
        too_big(model, real.collate(examples[:n]))

    assert find_micro_batch(fits, 8) == 3 and tried[0] == 8
    # pieces of 3 give the step exactly the gradient of the whole micro-batch of 8
    after = {}
    for micro in (None, 3):
        torch.manual_seed(0)
        m = apply_method(AutoModelForCausalLM.from_pretrained(tiny_model_dir), MethodConfig(name="full"))
        cfg = TrainingConfig(max_steps=2, batch_size=8, micro_batch_size=micro, trackers=[], packing=False)
        train(m, examples, fns if micro else real, cfg, accelerator=Accelerator(cpu=True))
        after[micro] = {n: p.detach().clone() for n, p in m.named_parameters()}
    for name, weight in after[None].items():
        assert torch.allclose(weight, after[3][name], atol=1e-6), name


def test_merged_packed_row_keeps_every_example_isolated(tiny_model_dir: Path) -> None:
    from tunesmith.engine.packing import merge_rows, model_inputs, pad_packed

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = sst2_examples(tokenizer, 6)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    packed = sft.collate_packed(examples, tokenizer.pad_token_id, 64)
    merged = pad_packed(merge_rows(packed), 128)
    assert packed["input_ids"].size(0) > 1 and merged["input_ids"].size(0) == 1
    assert merged["input_ids"].size(1) % 128 == 0 and int(merged["attention_mask"].sum()) == sum(
        len(e.input_ids) for e in examples
    )
    assert sft.count_targets(merged) == sft.count_targets(packed)
    with torch.no_grad():
        logits = model(**model_inputs(model, merged)).logits[0]
        seq = merged["seq_ids"][0]
        for doc in seq[seq >= 0].unique().tolist():
            where = (seq == doc).nonzero().flatten()
            alone = model(input_ids=merged["input_ids"][0, where][None]).logits[0]
            assert (logits[where] - alone).abs().max() <= 1e-5


@pytest.mark.slow
def test_compile_compiles_each_decoder_layer_and_keeps_the_loss(tiny_model_dir: Path) -> None:
    from tunesmith.engine.model_options import compile_layers

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    batch = sft.collate(sst2_examples(tokenizer, 4), tokenizer.pad_token_id)
    model = apply_method(AutoModelForCausalLM.from_pretrained(tiny_model_dir), MethodConfig(name="lora")).eval()
    with torch.no_grad():
        plain, _ = sft.loss(model, batch)
        assert compile_layers(model) == 2  # the tiny Llama's two decoder layers
        compiled, _ = sft.loss(model, batch)
    layer = model.get_base_model().model.layers[0]
    assert layer._compiled_call_impl is not None
    assert abs(float(plain) - float(compiled)) <= 1e-4 * float(plain)
    assert not any("_orig_mod" in name for name in model.state_dict())  # parameter names unchanged


def test_cpu_training_returns_freed_memory_after_each_layer_without_changing_gradients(tiny_model_dir: Path) -> None:
    from tunesmith.engine import backward_window
    from tunesmith.engine.model_options import decoder_layers, release_freed_cpu_memory

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    fns = sft.task_fns(tokenizer, 128)
    batch = fns.collate(sst2_examples(tokenizer, 8))
    model = apply_method(AutoModelForCausalLM.from_pretrained(tiny_model_dir), MethodConfig(name="lora"))
    model.eval()  # no LoRA dropout noise: the two backward passes must agree exactly
    trainable = [p for p in model.parameters() if p.requires_grad]

    def grads() -> list[torch.Tensor]:
        model.zero_grad(set_to_none=True)
        backward_window(model, [batch], fns, Accelerator(cpu=True), trainable)
        return [p.grad.clone() for p in trainable]

    plain = grads()
    with release_freed_cpu_memory(model) as hooks:
        assert hooks == len(decoder_layers(model)) == 2  # one per decoder layer (glibc here)
        trimmed = grads()
    assert all(torch.equal(a, b) for a, b in zip(plain, trimmed, strict=True))
    assert all(not layer._forward_hooks for layer in decoder_layers(model))  # removed when training ends
    with release_freed_cpu_memory(model, enabled=False) as hooks:
        assert hooks == 0 and all(not layer._forward_hooks for layer in decoder_layers(model))


def test_cpu_training_trims_only_when_rows_are_computed_together(tiny_model_dir: Path) -> None:
    """A packed row at a time already keeps the CPU peak small, and a trim after each of its layers cost ~20%."""
    from tunesmith.engine.model_options import decoder_layers

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = sst2_examples(tokenizer, 8)
    fns = sft.task_fns(tokenizer, 128)
    for micro_batch, trims in ((None, False), (4, True)):
        model = apply_method(AutoModelForCausalLM.from_pretrained(tiny_model_dir), MethodConfig(name="lora"))
        hooked: list[bool] = []
        cfg = TrainingConfig(max_steps=1, batch_size=4, micro_batch_size=micro_batch, eval_every=1)
        train(model, examples, fns, cfg, accelerator=Accelerator(cpu=True), val_examples=examples[:2],
              on_eval=lambda *_: hooked.append(all(layer._forward_hooks for layer in decoder_layers(model))))  # noqa: B023  # fmt: skip
        assert hooked == [trims], micro_batch


def test_training_builds_no_kv_cache_and_generation_keeps_it(tiny_model_dir: Path) -> None:
    """transformers fills a key/value cache in every forward by default; training never reads one."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = apply_method(AutoModelForCausalLM.from_pretrained(tiny_model_dir), MethodConfig(name="lora"))
    caches: list = []
    model.get_base_model().register_forward_hook(lambda _m, _a, out: caches.append(out.past_key_values))
    cfg = TrainingConfig(max_steps=1, batch_size=4)
    train(model, sst2_examples(tokenizer, 4), sft.task_fns(tokenizer, 128), cfg, accelerator=Accelerator(cpu=True))
    assert caches and all(cache is None for cache in caches)
    assert model.config.use_cache  # restored: generation after training still caches
    model(torch.tensor([[5, 6, 7]]))
    assert caches[-1] is not None
