"""Sequential fine-tuning: `stages:` in one config, each stage from the previous stage's model, with replay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from tests.helpers.cli import run_cli
from tests.helpers.paths import SST2
from tunesmith.core.config import load_config, stage_configs
from tunesmith.core.errors import ConfigError, TunesmithError
from tunesmith.core.fs import read_jsonl
from tunesmith.pipeline.run import Run


def staged_config(folder: Path, model_dir: Path, **second: object) -> Path:
    """Stage 1: LoRA sft on one prompt format; stage 2: full sft on another, replaying half of stage 1's rows."""
    config = {
        "model": {"name": str(model_dir)},
        "method": {"name": "lora", "lora": {"r": 4}},
        "training": {"max_steps": 3, "batch_size": 4, "max_seq_len": 64, "learning_rate": 1e-2},
        "eval": {"enabled": False},
        "output": {"dir": str(folder / "runs"), "name": "staged"},
        "stages": [
            {
                "name": "first",
                "data": {
                    "train": "sst2/train.tsv",  # relative to the config file
                    "prompt_template": "Sentiment of: {sentence}",
                    "completion_template": "{label}",
                    "label_names": {0: "negative", 1: "positive"},
                    "train_rows": 16,
                },
            },
            {
                "name": "second",
                "replay": 0.5,
                "method": {"name": "full"},
                "training": {"max_steps": 2},
                "eval": {"enabled": True, "baseline": False, "forgetting": False, "bias_probe": False, "few_shot": 0},
                "data": {
                    "train": "sst2/train.tsv",
                    "test": "sst2/dev.tsv",
                    "prompt_template": "Review: {sentence}\nIs it positive or negative?",
                    "completion_template": "{label}",
                    "label_names": {0: "negative", 1: "positive"},
                    "train_rows": 8,
                    "test_rows": 6,
                },
                **second,
            },
        ],
    }
    (folder / "sst2").symlink_to(SST2)
    path = folder / "staged.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def test_each_stage_merges_shared_sections_with_its_overrides(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = load_config(staged_config(tmp_path, tiny_model_dir))
    first, second = stage_configs(config)
    assert (first.method.name, first.method.lora.r) == ("lora", 4)  # shared method
    assert second.method.name == "full"  # a new method name replaces the shared method
    assert (first.training.max_steps, second.training.max_steps) == (3, 2)  # training merges key by key
    assert second.training.learning_rate == 1e-2
    assert Path(first.data.train) == (tmp_path / "sst2" / "train.tsv").resolve()  # relative to the config
    assert first.run_dir == tmp_path / "runs" / "staged" / "stages" / "1-first"
    assert not first.eval.enabled and second.eval.enabled


def test_a_bad_stage_is_rejected_before_anything_runs(tiny_model_dir: Path, tmp_path: Path) -> None:
    path = staged_config(tmp_path, tiny_model_dir, training={"lerning_rate": 1e-3})
    with pytest.raises(ConfigError, match=r"(?s)stages\[1\] \(second\).*training.lerning_rate"):
        load_config(path)
    (tmp_path / "ok").mkdir()
    with pytest.raises(TunesmithError, match="has stages"):  # a staged config is not one run
        Run(load_config(staged_config(tmp_path / "ok", tiny_model_dir)))


def test_stage_two_starts_from_stage_one_and_replays_its_rows(tiny_model_dir: Path, tmp_path: Path) -> None:
    result = run_cli("run", str(staged_config(tmp_path, tiny_model_dir)))
    assert result.returncode == 0, result.stderr
    stages = tmp_path / "runs" / "staged" / "stages"
    merged = stages / "1-first" / "merged"
    assert (merged / "model.safetensors").is_file()  # the LoRA stage was merged for the next stage

    # Stage 2 loaded stage 1's merged weights as its base, and they differ from the original model's.
    second = yaml.safe_load((stages / "2-second" / "config.yaml").read_text())
    assert Path(second["model"]["name"]) == merged.resolve()
    start = Run.from_dir(stages / "2-second").load_base().state_dict()
    stage_one = AutoModelForCausalLM.from_pretrained(merged).state_dict()
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    assert all(torch.equal(start[k], stage_one[k]) for k in stage_one)
    assert any(not torch.equal(stage_one[k], original[k]) for k in original)

    # replay 0.5 of 8 new rows: 8 rows of stage 1's training split, marked with where they came from.
    rows = list(read_jsonl(stages / "2-second" / "data" / "train.jsonl"))
    replayed = [r for r in rows if r["meta"].get("replay") == "1-first"]
    assert (len(rows), len(replayed)) == (16, 8)
    assert all(r["messages"][-2]["content"].startswith("Sentiment of:") for r in replayed)
    report = json.loads((stages / "2-second" / "data" / "report.json").read_text())
    assert report["replay"] == {"fraction": 0.5, "rows": 8}
    assert json.loads((stages / "2-second" / "eval" / "metrics.json").read_text())["tuned"]["accuracy"] >= 0
    assert "accuracy" in result.stdout  # the last stage's evaluation is printed

    again = run_cli("run", str(tmp_path / "staged.yaml"))  # a finished staged run is not redone
    assert again.returncode == 0 and "already complete" in again.stderr
