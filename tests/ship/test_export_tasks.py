"""`tunesmith export` of task-head runs (classify, tag, qa, seq2seq, reward, multi-head): each folder loads with
plain transformers' ``AutoModelFor...`` class, carries the run's labels, and gives the run's model's outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from transformers import (
    AutoModelForQuestionAnswering,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
)

from tests.helpers.cli import run_cli_in_process
from tests.helpers.configs import write_qa_config
from tests.helpers.data import write_pairs
from tests.helpers.models import build_tiny_t5
from tests.helpers.task_runs import LORA, train, write_config
from tests.recipes.test_seq2seq import copy_rows
from tunesmith.core.errors import TunesmithError
from tunesmith.pipeline.trained import TrainedRun
from tunesmith.ship.export import export_kind, export_run


def tuned_outputs(run_dir: Path, inputs: dict[str, torch.Tensor]) -> Any:
    with torch.no_grad():
        return TrainedRun.from_dir(run_dir).load_tuned()[0](**inputs)


def text_inputs(folder: Path, text: str) -> dict[str, torch.Tensor]:
    return dict(AutoTokenizer.from_pretrained(folder)(text, return_tensors="pt"))


def test_classify_lora_merges_with_its_head_and_serves_its_label_names(classify_lora: Path, tmp_path: Path) -> None:
    from transformers import pipeline

    out = tmp_path / "cls"
    result = export_run(TrainedRun.from_dir(classify_lora), out, merge=True)
    assert result.kind == "merged" and result.max_logit_diff <= 1e-4 and result.checks["same_argmax"]
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    model = AutoModelForSequenceClassification.from_pretrained(out)  # plain transformers, no peft
    assert model.config.id2label == {0: "negative", 1: "positive"} and model.config.label2id["positive"] == 1
    inputs = text_inputs(out, "a gorgeous , witty , seductive movie .")
    with torch.no_grad():
        exported = model(**inputs).logits
    expected = tuned_outputs(classify_lora, inputs).logits
    assert (exported - expected).abs().max() <= 1e-4 and exported.argmax(-1) == expected.argmax(-1)
    base = AutoModelForSequenceClassification.from_pretrained(
        Path(yaml.safe_load((classify_lora / "config.yaml").read_text())["model"]["name"]), num_labels=2
    )
    with torch.no_grad():
        assert (base(**inputs).logits - exported).abs().max() > 1e-3  # the trained head and LoRA are in it

    classifier = pipeline("text-classification", model=str(out))
    assert {p["label"] for p in classifier(["a dull film", "a joy to watch"])} <= {"negative", "positive"}

    summary = json.loads((out / "export.json").read_text())
    assert summary["task"] == "classify" and summary["kind"] == "merged"
    assert summary["folders"]["."]["auto_class"] == "AutoModelForSequenceClassification"
    assert summary["folders"]["."]["labels"] == ["negative", "positive"] and summary["checks"]["same_argmax"]
    card = (out / "README.md").read_text()
    assert "pipeline_tag: text-classification" in card and 'pipeline("text-classification", model="cls")' in card
    accuracy = json.loads((classify_lora / "eval" / "metrics.json").read_text())["tuned"]["accuracy"]
    assert f"| accuracy | {accuracy:.4f} |" in card and "`negative`, `positive`" in card


def test_classify_adapter_export_loads_on_the_base_with_peft(classify_lora: Path, tmp_path: Path) -> None:
    from peft import PeftModel

    out = tmp_path / "adapter"
    assert export_run(TrainedRun.from_dir(classify_lora), out).kind == "adapter"
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    base_dir = yaml.safe_load((classify_lora / "config.yaml").read_text())["model"]["name"]
    base = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=2)
    model = PeftModel.from_pretrained(base, str(out)).eval()  # the card's recipe
    inputs = text_inputs(out, "an unseen film")
    with torch.no_grad():
        assert (model(**inputs).logits - tuned_outputs(classify_lora, inputs).logits).abs().max() <= 1e-5
    assert "num_labels=2" in (out / "README.md").read_text()


def test_full_classify_export_keeps_the_weights(classify_full: Path, tmp_path: Path) -> None:
    result = export_run(TrainedRun.from_dir(classify_full), tmp_path / "full")
    assert result.kind == "full" and result.max_logit_diff <= 1e-4
    assert not (tmp_path / "full" / "generation_config.json").exists()  # a classifier does not generate


def test_tag_lora_export_is_a_token_classifier_with_the_run_tags(tag_lora: Path, tmp_path: Path) -> None:
    out = tmp_path / "tag"
    result = export_run(TrainedRun.from_dir(tag_lora), out, merge=True)
    assert result.kind == "merged" and result.checks["same_argmax"]
    model = AutoModelForTokenClassification.from_pretrained(out)
    tags = TrainedRun.from_dir(tag_lora).labels()
    assert [model.config.id2label[i] for i in range(len(tags))] == tags and "B-person" in tags
    inputs = text_inputs(out, "Maria Lopez flew to Paris last week .")
    with torch.no_grad():
        exported = model(**inputs).logits
    expected = tuned_outputs(tag_lora, inputs).logits
    assert (exported - expected).abs().max() <= 1e-4 and torch.equal(exported.argmax(-1), expected.argmax(-1))
    assert "pipeline_tag: token-classification" in (out / "README.md").read_text()


def test_qa_export_answers_like_the_run(token_bert_dir: Path, tmp_path: Path) -> None:
    run_dir = train(write_qa_config(tmp_path, token_bert_dir, training={"max_steps": 3}, eval={"enabled": False}))
    out = tmp_path / "qa"
    result = export_run(TrainedRun.from_dir(run_dir), out)
    assert result.kind == "full" and result.checks["same_argmax"]
    model = AutoModelForQuestionAnswering.from_pretrained(out)
    inputs = dict(AutoTokenizer.from_pretrained(out)("Who bought a boat?", "Omar bought a boat.", return_tensors="pt"))
    with torch.no_grad():
        exported = model(**inputs)
    expected = tuned_outputs(run_dir, inputs)
    assert (exported.start_logits - expected.start_logits).abs().max() <= 1e-4
    assert (exported.end_logits - expected.end_logits).abs().max() <= 1e-4
    assert json.loads((out / "export.json").read_text())["folders"]["."]["pipeline_tag"] == "question-answering"


def test_seq2seq_lora_export_generates_like_the_run(tmp_path: Path) -> None:
    model_dir = tmp_path / "t5"
    build_tiny_t5(model_dir)
    rows = copy_rows(40, 0)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = write_config(
        tmp_path,
        "copy",
        {
            "model": {"name": str(model_dir)},
            "task": {"name": "seq2seq", "seq2seq": {"prefix": "copy: "}},
            "method": {"name": "lora", "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q", "v"]}},
            "data": {"train": str(tmp_path / "train.jsonl"), "test_fraction": 0.25, "dedup": {"near": False}},
            "training": {"max_steps": 3, "batch_size": 8, "learning_rate": 5e-2, "max_seq_len": 16},
            "eval": {"enabled": False},
        },
    )
    run_dir = train(config)
    out = tmp_path / "seq2seq"
    result = export_run(TrainedRun.from_dir(run_dir), out, merge=True)
    assert result.kind == "merged" and result.max_logit_diff <= 1e-4
    model = AutoModelForSeq2SeqLM.from_pretrained(out)
    assert (out / "generation_config.json").is_file()
    inputs = text_inputs(out, "copy: blue bird")
    tuned = TrainedRun.from_dir(run_dir).load_tuned()[0]
    generated = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert torch.equal(generated, tuned.generate(**inputs, max_new_tokens=6, do_sample=False))
    card = (out / "README.md").read_text()
    assert "AutoModelForSeq2SeqLM" in card and 'tokenizer("copy: ...", return_tensors="pt")' in card


def test_reward_export_is_a_one_label_classifier(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        "rm",
        {
            "model": {"name": str(tiny_model_dir)},
            "task": {"name": "reward"},
            "data": {"train": str(write_pairs(tmp_path / "pairs.jsonl", 24)), "test_fraction": 0.25},
            "method": LORA,
            "training": {"max_steps": 3, "batch_size": 4, "max_seq_len": 64, "learning_rate": 1e-2},
            "eval": {"enabled": False},
        },
    )
    run_dir = train(config)
    out = tmp_path / "reward"
    result = export_run(TrainedRun.from_dir(run_dir), out, merge=True)
    assert result.kind == "merged" and result.max_logit_diff <= 1e-4
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_labels == 1 and model.config.id2label == {0: "reward"}
    inputs = text_inputs(out, "Sentiment of: fine <|im_end|> positive")
    with torch.no_grad():
        exported = model(**inputs).logits
    assert (exported - tuned_outputs(run_dir, inputs).logits).abs().max() <= 1e-4


def test_multi_head_run_exports_a_folder_per_task(token_bert_dir: Path, tmp_path: Path) -> None:
    from tests.recipes.test_multihead import write_config as write_heads_config

    path = write_heads_config(tmp_path, token_bert_dir)
    raw = yaml.safe_load(path.read_text())
    raw["training"]["max_steps"] = 3
    raw["eval"] = {"enabled": False}
    path.write_text(yaml.safe_dump(raw))
    run_dir = train(path)
    out = tmp_path / "heads"
    result = export_run(TrainedRun.from_dir(run_dir), out)
    assert result.task == "multihead" and set(result.checks["heads"]) == {"mentions", "entities"}
    classifier = AutoModelForSequenceClassification.from_pretrained(out / "mentions")
    tagger = AutoModelForTokenClassification.from_pretrained(out / "entities")
    assert set(classifier.config.id2label.values()) == {"none", "person"}
    assert "B-person" in tagger.config.id2label.values()
    assert (out / "mentions" / "tokenizer.json").is_file() and (out / "entities" / "tokenizer.json").is_file()
    summary = json.loads((out / "export.json").read_text())
    assert summary["task"] == "multihead" and summary["folders"]["entities"]["task"] == "tag"
    card = (out / "README.md").read_text()
    assert "`heads/mentions/`: task `classify`" in card and "`heads/entities/`: task `tag`" in card


def test_what_a_task_cannot_export_is_refused_with_the_reason(classify_lora: Path, tmp_path: Path) -> None:
    result = run_cli_in_process("export", str(classify_lora), "--out", str(tmp_path / "g"), "--gguf", "f16")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "GGUF files hold causal language models" in result.stderr and "classify" in result.stderr
    assert not (tmp_path / "g").exists()
    with pytest.raises(TunesmithError, match="virtual tokens"):
        export_kind("prefix", merge=True)
    with pytest.raises(TunesmithError, match="cannot be folded"):
        export_kind("adapter", merge=True)
    assert export_kind("adapter", merge=False) == "bottleneck"  # alone, in tunesmith's layout
