"""seq2seq: encoder-decoder text-to-text on a tiny T5 built from a config (encode, loss, methods, CLI run)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from tests.helpers.cli import run_cli
from tests.helpers.models import T5_WORDS, build_tiny_t5
from tunesmith.core.config import MethodConfig, validate_config
from tunesmith.core.errors import ConfigError
from tunesmith.data.records import Pair
from tunesmith.models.adapt import apply_method, count_parameters, load_trained, save_model
from tunesmith.pipeline.run import Run
from tunesmith.recipes import seq2seq


@pytest.fixture(scope="module")
def tiny_t5_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-t5")
    build_tiny_t5(folder)
    return folder


def config_for(model_dir: Path, **sections: dict) -> object:
    raw = {
        "model": {"name": str(model_dir)},
        "task": {"name": "seq2seq"},
        "data": {"train": "unused.jsonl"},
        "eval": {"enabled": False},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return validate_config(raw)


def tokenizer_of(model_dir: Path) -> object:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def test_encode_adds_prefix_truncates_and_masks_padding(tiny_t5_dir: Path) -> None:
    tok = tokenizer_of(tiny_t5_dir)
    cfg = config_for(
        tiny_t5_dir, task={"name": "seq2seq", "seq2seq": {"prefix": "copy: ", "max_target_len": 3}}, training={}
    )
    cfg.training.max_seq_len = 4
    short = seq2seq.encode_row(Pair("red cat", "cat"), tok, cfg)
    assert tok.convert_ids_to_tokens(short.input_ids) == ["copy:", "red", "cat", "</s>"]
    assert short.labels == tok("cat")["input_ids"] and short.n_targets == 2 and not short.truncated
    long = seq2seq.encode_row(Pair("red cat dog bird", "one two three four"), tok, cfg)
    assert tok.convert_ids_to_tokens(long.input_ids) == ["copy:", "red", "cat", "</s>"]  # ends with EOS
    assert tok.convert_ids_to_tokens(long.labels) == ["one", "two", "</s>"] and long.truncated
    batch = seq2seq.collate([short, long], tok.pad_token_id)
    assert batch["labels"].tolist()[0] == [*short.labels, -100]  # padding carries no loss
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 1]]
    assert seq2seq.count_targets(batch) == 5


def test_loss_is_summed_over_target_tokens_whatever_the_batching(tiny_t5_dir: Path) -> None:
    from transformers import AutoModelForSeq2SeqLM

    tok = tokenizer_of(tiny_t5_dir)
    cfg = config_for(tiny_t5_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir).eval()
    pairs = [Pair("red cat dog", "dog cat red"), Pair("one", "one two three four five"), Pair("blue", "six")]
    examples = [seq2seq.encode_row(p, tok, cfg) for p in pairs]
    with torch.no_grad():
        together, count = seq2seq.loss(model, seq2seq.collate(examples, tok.pad_token_id))
        alone = [seq2seq.loss(model, seq2seq.collate([e], tok.pad_token_id)) for e in examples]
        batch = seq2seq.collate(examples, tok.pad_token_id)
        mean = model(**batch).loss  # transformers' own mean over target tokens
    assert count == sum(n for _, n in alone) == sum(e.n_targets for e in examples) == 4 + 6 + 2
    assert together.item() == pytest.approx(sum(loss.item() for loss, _ in alone), rel=1e-5)
    assert together.item() == pytest.approx(mean.item() * count, rel=1e-5)


def test_chats_and_labelled_texts_become_source_target_pairs(tiny_t5_dir: Path) -> None:
    from tunesmith.data.formats import RowError
    from tunesmith.data.records import Chat, Labeled, Message

    cfg = config_for(tiny_t5_dir, data={"train": "unused.jsonl", "label_names": {0: "negative", 1: "positive"}})
    pair = seq2seq.convert(Labeled("a fine film", "1"), cfg)  # T5's text-to-text classification
    assert (pair.source_text, pair.target, pair.meta["label"]) == ("a fine film", "positive", "1")
    chat = Chat([Message("system", "Be brief."), Message("user", "Say hi"), Message("assistant", "hi")])
    assert (seq2seq.convert(chat, cfg).source_text, seq2seq.convert(chat, cfg).target) == ("Say hi", "hi")
    turns = Chat([Message("user", "a"), Message("assistant", "b"), Message("user", "c"), Message("assistant", "d")])
    with pytest.raises(RowError, match="several turns"):
        seq2seq.convert(turns, cfg)


def _linear_count(model: nn.Module, r: int) -> int:
    return sum(
        r * (m.in_features + m.out_features)
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear) and n != "lm_head"
    )


METHODS = {
    "full": ({}, lambda m: sum(p.numel() for p in m.parameters())),
    # the top block of the decoder (the stack next to the output head) and the LM head
    "freeze": (
        {"freeze": {"train_layers": 1}},
        lambda m: sum(p.numel() for p in m.decoder.block[-1].parameters()) + m.lm_head.weight.numel(),
    ),
    "lora": ({"lora": {"r": 4}}, lambda m: _linear_count(m, 4)),
    # peft's T5 default: rescale k and v outputs of every attention and the feed-forward input of wo.
    "ia3": (
        {},
        lambda m: sum(
            mod.out_features if name.endswith((".k", ".v")) else mod.in_features
            for name, mod in m.named_modules()
            if name.endswith((".k", ".v", ".wo"))
        ),
    ),
    # a key and a value vector per virtual token in each of the 2 layers (shared by encoder and decoder)
    "prefix": ({"prefix": {"num_virtual_tokens": 4}}, lambda m: 4 * 2 * 2 * 64),
    # virtual token embeddings for the encoder and for the decoder
    "prompt": ({"prompt": {"num_virtual_tokens": 4}}, lambda m: 2 * 4 * 64),
    # 10 adapters (6 attention outputs `o`, 4 feed-forward outputs `wo`): 64 -> 8 -> 64 with biases
    "adapter": ({"adapter": {"size": 8, "target_modules": ["o", "wo"]}}, lambda m: 10 * (64 * 8 + 8 + 8 * 64 + 64)),
}


@pytest.mark.parametrize("name", list(METHODS))
def test_methods_train_the_expected_parameters_and_reload_identically(
    name: str, tiny_t5_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForSeq2SeqLM

    settings, expected = METHODS[name]
    method = MethodConfig.model_validate({"name": name, **settings})
    tok = tokenizer_of(tiny_t5_dir)
    cfg = config_for(tiny_t5_dir)
    base = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir)
    want = expected(base)
    torch.manual_seed(0)
    model = apply_method(base, method, tokenizer_path=str(tiny_t5_dir), task_type=seq2seq.RECIPE.peft_task_type)
    trainable, _ = count_parameters(model)
    assert trainable == want
    with torch.no_grad():  # stand-in for training: move every trainable weight
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.2)
    batch = seq2seq.collate([seq2seq.encode_row(Pair("red cat dog", "dog cat red"), tok, cfg)], tok.pad_token_id)
    model.eval()
    with torch.no_grad():
        before = seq2seq.loss(model, batch)[0].item()
    sources = ["red cat dog", "one two"]
    generated = seq2seq.generate(model, tok, sources, 16, 6, 2)
    save_model(model, method, tmp_path)
    reloaded = load_trained(
        method, tmp_path, AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir), seq2seq.auto_class()
    ).eval()
    with torch.no_grad():
        assert seq2seq.loss(reloaded, batch)[0].item() == pytest.approx(before, rel=1e-6)
    assert seq2seq.generate(reloaded, tok, sources, 16, 6, 2) == generated


def test_prune_is_rejected_before_any_model_loads(tiny_t5_dir: Path) -> None:
    with pytest.raises(ConfigError, match="does not support: it drops the layers of a causal LM"):
        Run(config_for(tiny_t5_dir, method={"name": "prune"}))


def copy_rows(n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = " ".join(rng.choices(T5_WORDS, k=rng.randint(2, 4)))
        rows.append({"source": words, "target": words})
    return rows


def test_cli_run_learns_to_copy(tiny_t5_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`tunesmith run` on a learnable slice: the tuned T5 copies its input, the random base model cannot."""
    for name, rows in (("train", copy_rows(400, 0)), ("test", copy_rows(40, 1))):
        (tmp_path / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    config = {
        "model": {"name": str(tiny_t5_dir)},
        "task": {"name": "seq2seq", "seq2seq": {"prefix": "copy: "}},
        "method": {"name": "full"},
        "data": {"train": "train.jsonl", "test": "test.jsonl", "dedup": {"near": False}},
        "training": {"max_steps": 150, "batch_size": 16, "learning_rate": 5e-3, "max_seq_len": 32},
        "eval": {"max_new_tokens": 8, "batch_size": 20, "bootstrap_samples": 200},
        "output": {"dir": str(tmp_path / "runs"), "name": "copy"},
    }
    path = tmp_path / "copy.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a tiny model on a shared 2-core machine: threads only contend
    result = run_cli("run", str(path))
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "runs" / "copy"
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert set(metrics["tuned"]) == {"bleu", "chrf", "rouge1", "rouge2", "rougeL", "exact_match"}
    assert metrics["tuned"]["chrf"] > metrics["base"]["chrf"] + 25
    assert metrics["tuned"]["rouge1"] > 50 > metrics["base"]["rouge1"]
    comparison = json.loads((run_dir / "eval" / "comparison.json").read_text())
    assert comparison["chrf"]["ci95"][0] > 0 and comparison["chrf"]["test"] == "paired_bootstrap"
    rows = [json.loads(line) for line in (run_dir / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 40 and {"input", "reference", "base", "tuned"} <= set(rows[0])
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "chrf" in html and rows[0]["tuned"]["prediction"] in html  # samples show the generated text

    # tunesmith predict transforms the rows of another file exactly as evaluation decoded them.
    source = tmp_path / "inputs.jsonl"
    inputs = [{"id": i, "source": r["source"]} for i, r in enumerate(copy_rows(40, 1)[:6])] + [{"id": 9, "source": ""}]
    source.write_text("".join(json.dumps(r) + "\n" for r in inputs), encoding="utf-8")
    out = tmp_path / "predicted.jsonl"
    predicted = run_cli("predict", str(run_dir), "--input", str(source), "--output", str(out))
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["row"] for line in lines] == list(range(1, 8))
    assert [line["prediction"] for line in lines[:6]] == [row["tuned"]["prediction"] for row in rows[:6]]
    assert lines[6]["prediction"] is None and "empty" in lines[6]["error"]
