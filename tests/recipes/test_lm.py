"""lm: continued pre-training on raw text with a tiny Llama (packing, loss on every token, perplexity evaluation)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers.cli import run_cli
from tests.helpers.paths import SST2
from tunesmith.core.config import load_config, validate_config
from tunesmith.data.records import Pair, Text
from tunesmith.recipes import lm

ADJECTIVES = ["funny", "dull", "brilliant", "long", "quiet", "warm"]
NOUNS = ["film", "story", "actor", "scene", "director", "script"]
VERBS = ["loves", "hates", "follows", "ruins", "saves", "watches"]


def domain_document(rng: random.Random) -> str:
    """A paragraph of a tiny, very regular 'domain language' a small model learns quickly."""
    sentences = [
        f"the {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {rng.choice(VERBS)} the {rng.choice(NOUNS)} ."
        for _ in range(rng.randint(3, 7))
    ]
    return " ".join(sentences)


def write_domain_folder(folder: Path, n: int, seed: int) -> Path:
    """A folder of .txt / .md files, one document each (the usual shape of a domain corpus)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    for i in range(n):
        (folder / f"doc{i:03d}.{'md' if i % 3 == 0 else 'txt'}").write_text(domain_document(rng), encoding="utf-8")
    return folder


def config_for(model_dir: Path, **sections: dict) -> object:
    raw = {
        "model": {"name": str(model_dir)},
        "task": {"name": "lm"},
        "data": {"train": "x"},
        "eval": {"enabled": False},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return validate_config(raw)


def tokenizer_of(model_dir: Path) -> object:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def test_documents_end_with_eos_and_every_token_is_a_target(tiny_model_dir: Path) -> None:
    tok = tokenizer_of(tiny_model_dir)
    cfg = config_for(tiny_model_dir)
    doc = lm.encode_row(Text("the funny film saves the actor ."), tok, cfg)
    assert (
        doc.input_ids[-1] == tok.eos_token_id
        and doc.input_ids[:-1] == tok("the funny film saves the actor .")["input_ids"]
    )
    assert doc.n_targets == len(doc.input_ids) - 1 and not doc.truncated
    assert lm.convert(Pair("an abstract.", "its tldr"), cfg).text == "an abstract."  # SciTLDR rows: the abstract
    assert lm.pieces(list(range(10)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert lm.pieces(list(range(9)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]  # a 1-token tail predicts nothing


def test_packed_training_loss_equals_the_evaluation_score(tiny_model_dir: Path) -> None:
    """Isolated packing trains on exactly what evaluation scores: the same pieces, the same summed loss."""
    from transformers import AutoModelForCausalLM

    tok = tokenizer_of(tiny_model_dir)
    cfg = config_for(tiny_model_dir, training={"max_seq_len": 24})
    rng = random.Random(0)
    texts = [domain_document(rng) for _ in range(5)]
    docs = [lm.encode_row(Text(t), tok, cfg) for t in texts]
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    fns = lm.train_fns(tok, cfg, pack_len=24)
    batch = fns.collate(docs)
    assert batch["input_ids"].shape[1] <= 24 and "seq_ids" in batch
    assert batch["input_ids"].shape[0] < sum(len(lm.pieces(d.input_ids, 24)) for d in docs)  # pieces share rows
    with torch.no_grad():
        summed, count = fns.loss(model, batch)
    scored = lm.document_losses(model, tok, texts, 24, batch_size=3)
    assert count == fns.count_targets(batch) == sum(n for _, n in scored)
    assert count == sum(len(p) - 1 for d in docs for p in lm.pieces(d.input_ids, 24))
    assert summed.item() == pytest.approx(sum(loss for loss, _ in scored), rel=1e-4)
    unpacked = lm.train_fns(tok, cfg, pack_len=None)  # prefix / prompt tuning, packing off: a row per piece
    with torch.no_grad():
        padded_loss, padded_count = unpacked.loss(model, unpacked.collate(docs))
    assert padded_count == count and padded_loss.item() == pytest.approx(summed.item(), rel=1e-4)


def test_concatenate_and_chunk_fills_every_row(tiny_model_dir: Path) -> None:
    tok = tokenizer_of(tiny_model_dir)
    cfg = config_for(tiny_model_dir, task={"name": "lm", "lm": {"isolate_documents": False}})
    rng = random.Random(1)
    docs = [lm.encode_row(Text(domain_document(rng)), tok, cfg) for _ in range(4)]
    batch = lm.train_fns(tok, cfg, pack_len=32).collate(docs)
    total = sum(len(d.input_ids) for d in docs)
    assert batch["input_ids"].shape == (math.ceil(total / 32), 32)
    assert batch["attention_mask"][:-1].all()  # only the last row is padded
    stream = torch.tensor([t for d in docs for t in d.input_ids])
    assert torch.equal(batch["input_ids"][batch["attention_mask"].bool()], stream)  # documents in order, EOS between
    assert lm.count_targets(batch) == total - batch["input_ids"].shape[0]


def test_cli_run_lowers_held_out_perplexity(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tunesmith run` on a folder of domain texts: perplexity on held-out documents falls, surely."""
    train = write_domain_folder(tmp_path / "corpus", 60, seed=0)
    test = write_domain_folder(tmp_path / "held_out", 12, seed=1)
    config = {
        "model": {"name": str(tiny_model_dir)},
        "task": {"name": "lm"},
        "method": {"name": "full"},  # LoRA on a random tiny model learns slowly; the stage test below uses it
        "data": {"train": str(train), "test": str(test), "dedup": {"near": False}},
        "training": {"max_steps": 30, "batch_size": 4, "learning_rate": 1e-2, "max_seq_len": 64},
        "eval": {"batch_size": 8, "bootstrap_samples": 200},
        "output": {"dir": str(tmp_path / "runs"), "name": "domain"},
    }
    path = tmp_path / "domain.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a tiny model on a shared 2-core machine: threads only contend
    result = run_cli("run", str(path))
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "runs" / "domain"
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert metrics["tuned"]["perplexity"] < 0.1 * metrics["base"]["perplexity"]  # measured: 596 -> 9.4
    assert metrics["tuned"]["loss"] == pytest.approx(math.log(metrics["tuned"]["perplexity"]))
    comparison = json.loads((run_dir / "eval" / "comparison.json").read_text())
    assert comparison["perplexity"]["ci95"][1] < 0  # paired bootstrap over documents
    rows = [json.loads(line) for line in (run_dir / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and rows[0]["tuned"]["tokens"] > 0 and rows[0]["input"].startswith("the ")
    assert sum(r["tuned"]["loss"] for r in rows) / sum(r["tuned"]["tokens"] for r in rows) == pytest.approx(
        metrics["tuned"]["loss"]
    )
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "perplexity" in html and rows[0]["tuned"]["display"] in html


def test_an_lm_stage_hands_its_model_to_an_sft_stage(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Domain pre-training then instruction tuning: the sft stage starts from the lm stage's (merged) model."""
    from transformers import AutoModelForCausalLM

    from tunesmith.pipeline.sequential import run_stages

    corpus = write_domain_folder(tmp_path / "corpus", 16, seed=2)
    config = {
        "model": {"name": str(tiny_model_dir)},
        "method": {"name": "lora", "lora": {"r": 4}},
        "training": {"max_steps": 2, "batch_size": 4, "max_seq_len": 64, "learning_rate": 1e-2},
        "eval": {"enabled": False},
        "output": {"dir": str(tmp_path / "runs"), "name": "staged"},
        "stages": [
            {"name": "domain", "task": {"name": "lm"}, "data": {"train": str(corpus)}},
            {
                "name": "chat",
                "task": {"name": "sft"},
                "method": {"name": "full"},
                "data": {
                    "train": str(SST2 / "train.tsv"),
                    "prompt_template": "Sentiment of: {sentence}",
                    "completion_template": "{label}",
                    "label_names": {0: "negative", 1: "positive"},
                    "train_rows": 8,
                },
            },
        ],
    }
    path = tmp_path / "staged.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    run_stages(load_config(path))
    stages = tmp_path / "runs" / "staged" / "stages"
    lm_run, sft_run = stages / "1-domain", stages / "2-chat"
    assert (lm_run / "model" / "adapter_config.json").is_file()
    sft_config = yaml.safe_load((sft_run / "config.yaml").read_text())
    start = Path(sft_config["model"]["name"])
    assert start.is_relative_to(lm_run) and start != Path(str(tiny_model_dir))
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    domain = AutoModelForCausalLM.from_pretrained(start).state_dict()
    assert any(not torch.equal(base[k], domain[k]) for k in base)  # the lm stage changed the weights
    assert (sft_run / "model" / "model.safetensors").is_file()
