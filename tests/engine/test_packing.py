"""Packing: examples sharing a row never see each other, and loss and gradients equal the padded batch's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.helpers.training import gradients, sst2_examples
from tunesmith.data.render import IGNORE_INDEX
from tunesmith.engine.packing import block_causal_mask, model_inputs, pack, plan_rows
from tunesmith.recipes import sft


def test_plan_rows_respects_the_budget_and_uses_every_example_once() -> None:
    lengths = [30, 5, 60, 12, 33, 64, 1, 20]
    rows = plan_rows(lengths, 64)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 64 for row in rows)
    assert len(rows) < len(lengths)  # something was packed together


def test_block_mask_is_causal_within_examples_only() -> None:
    seq_ids = torch.tensor([[0, 0, 1, 1, 1, -1]])
    allowed = block_causal_mask(seq_ids)[0, 0]
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [0, 0, 1, 0, 0, 0],
            [0, 0, 1, 1, 0, 0],
            [0, 0, 1, 1, 1, 0],
            [0, 0, 0, 0, 0, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(allowed, expected)
    additive = block_causal_mask(seq_ids, torch.float32)[0, 0]
    assert torch.equal(additive == 0, expected)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_each_packed_example_has_the_logits_it_has_alone(tiny_model_dir: Path, attn: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = sst2_examples(tokenizer, 6)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=attn).eval()
    batch = sft.collate_packed(examples, tokenizer.pad_token_id, row_len=128)
    assert batch["input_ids"].shape[0] < len(examples)  # really packed
    with torch.no_grad():
        packed = model(**model_inputs(model, batch)).logits
        naive = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        checked = 0
        for row in range(batch["input_ids"].shape[0]):
            seq = batch["seq_ids"][row]
            for doc in seq[seq >= 0].unique().tolist():
                where = (seq == doc).nonzero().flatten()
                alone = model(input_ids=batch["input_ids"][row, where][None]).logits[0]
                assert (packed[row, where] - alone).abs().max() <= 1e-5
                if where[0] > 0:  # a later example in its row: without the block mask it would see the previous
                    assert (naive[row, where] - alone).abs().max() > 1e-3
                checked += 1
    assert checked == len(examples)


def test_label_masks_survive_packing(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = sst2_examples(tokenizer, 8)
    batch = sft.collate_packed(examples, tokenizer.pad_token_id, row_len=128)
    rebuilt = {}
    for row in range(batch["input_ids"].shape[0]):
        seq = batch["seq_ids"][row]
        for doc in seq[seq >= 0].unique().tolist():
            where = (seq == doc).nonzero().flatten()
            ids = batch["input_ids"][row, where].tolist()
            labels = batch["labels"][row, where].tolist()
            assert labels[0] == IGNORE_INDEX  # never predicted from the previous example's last token
            assert batch["position_ids"][row, where].tolist() == list(range(len(ids)))
            rebuilt[tuple(ids)] = labels
    for example in examples:  # assistant-only stays assistant-only, token for token
        assert rebuilt[tuple(example.input_ids)][1:] == example.labels[1:]
        assert any(label != IGNORE_INDEX for label in example.labels)
    assert sft.count_targets(batch) == sum(sum(1 for label in e.labels[1:] if label != IGNORE_INDEX) for e in examples)


def test_pad_tokens_carry_no_loss_and_rows_hold_every_token() -> None:
    sequences = [([5, 6, 7], [5, 6, 7]), ([8, 9], [IGNORE_INDEX, 9]), ([4, 4, 4, 4], [4, 4, 4, 4])]
    batch = pack(sequences, row_len=5, pad_id=0)
    assert int(batch["attention_mask"].sum()) == 9
    assert batch["input_ids"].shape[1] == 5
    pads = batch["seq_ids"] < 0
    assert (batch["labels"][pads] == IGNORE_INDEX).all()


@pytest.mark.parametrize("method", ["full", "lora"])
def test_loss_and_gradients_match_between_padded_and_packed(tiny_model_dir: Path, method: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = sst2_examples(tokenizer, 8)
    padded, padded_loss = gradients(tiny_model_dir, method, [8], examples, pack_len=None)
    packed, packed_loss = gradients(tiny_model_dir, method, [8], examples, pack_len=128)
    accumulated, accumulated_loss = gradients(tiny_model_dir, method, [3, 5], examples, pack_len=96)
    assert abs(padded_loss - packed_loss) <= 1e-5 and abs(padded_loss - accumulated_loss) <= 1e-5
    assert padded.keys() == packed.keys() and padded
    for name, grad in padded.items():
        assert grad.abs().max() > 0, name
        assert torch.allclose(grad, packed[name], atol=1e-5, rtol=0), name
        assert torch.allclose(grad, accumulated[name], atol=1e-5, rtol=0), name


def test_rows_one_at_a_time_give_the_packed_batch_gradients_without_padding(tiny_model_dir: Path) -> None:
    """What the engine does on a CPU (training.micro_batch_size null): each packed row alone, cut to its tokens."""
    from accelerate import Accelerator

    from tunesmith.engine import backward_window
    from tunesmith.engine.packing import split_rows

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    fns = sft.task_fns(tokenizer, 96)
    batch = fns.collate(sst2_examples(tokenizer, 8))
    rows = split_rows(batch)
    assert len(rows) == batch["input_ids"].size(0) > 1
    assert all(int(r["attention_mask"].sum()) == r["input_ids"].numel() for r in rows)  # no padding left
    assert sum(r["input_ids"].numel() for r in rows) == int(batch["attention_mask"].sum())
    assert split_rows({"input_ids": batch["input_ids"]}) == [{"input_ids": batch["input_ids"]}]  # not packed: whole

    def grads(batches: list) -> tuple[dict[str, torch.Tensor], float]:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        trainable = [p for p in model.parameters() if p.requires_grad]
        loss, _, _ = backward_window(model, batches, fns, Accelerator(cpu=True), trainable)
        return {n: p.grad.clone() for n, p in model.named_parameters()}, loss

    whole, whole_loss = grads([batch])
    row_wise, row_loss = grads(rows)
    assert abs(whole_loss - row_loss) <= 1e-5
    for name, grad in whole.items():
        assert torch.allclose(grad, row_wise[name], atol=1e-5, rtol=0), name
