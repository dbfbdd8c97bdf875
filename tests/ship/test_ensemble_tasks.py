"""`tunesmith eval --ensemble` of task-head runs: class probabilities averaged (classify), word tag probabilities
averaged (tag), and runs that cannot be combined refused with the reason."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.helpers.cli import run_cli_in_process
from tunesmith.core.errors import TunesmithError
from tunesmith.pipeline.trained import TrainedRun
from tunesmith.ship.ensemble import ensemble_runs


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def copy_run(run_dir: Path, folder: Path, name: str) -> Path:
    copy = folder / name
    shutil.copytree(run_dir, copy)
    return copy


def edit_config(run_dir: Path, change) -> None:
    path = run_dir / "config.yaml"
    config = yaml.safe_load(path.read_text())
    change(config)
    path.write_text(yaml.safe_dump(config))


def test_classify_ensemble_averages_the_members_probabilities(classify_lora: Path, classify_full: Path) -> None:
    result = run_cli_in_process("eval", "--ensemble", str(classify_lora), str(classify_full))
    assert result.returncode == 0, result.stderr
    out = classify_lora.parent / "ensemble-cls-lora+cls-full"
    written = json.loads((out / "metrics.json").read_text())
    assert written["method"] == "probability average" and written["members"] == ["cls-lora", "cls-full"]
    assert set(written["metrics"]) == {"cls-lora", "cls-full", "ensemble"}
    rows = read_jsonl(out / "predictions.jsonl")
    members = [read_jsonl(run / "eval" / "predictions.jsonl") for run in (classify_lora, classify_full)]
    assert len(rows) == 16
    correct = 0
    for i, row in enumerate(rows):
        a, b = (member[i]["tuned"]["probabilities"] for member in members)
        mean = {label: (a[label] + b[label]) / 2 for label in ("negative", "positive")}
        assert row["ensemble"]["probabilities"] == pytest.approx(mean, abs=1e-6)
        assert row["ensemble"]["prediction"] == max(mean, key=mean.get)
        assert row["cls-lora"]["probabilities"] == a and row["reference"] in ("negative", "positive")
        correct += row["ensemble"]["prediction"] == row["reference"]
    assert written["metrics"]["ensemble"]["accuracy"] == pytest.approx(correct / 16)
    own = json.loads((classify_full / "eval" / "metrics.json").read_text())["tuned"]
    assert written["metrics"]["cls-full"]["accuracy"] == pytest.approx(own["accuracy"])


def test_tag_ensemble_averages_word_probabilities(tag_lora: Path, tmp_path: Path) -> None:
    twin = copy_run(tag_lora, tmp_path, "tag-twin")  # the same model twice: the average is the model itself
    metrics = ensemble_runs([TrainedRun.from_dir(tag_lora), TrainedRun.from_dir(twin)], tmp_path / "ensemble")
    assert metrics["ensemble"] == pytest.approx(metrics["tag"]) and "f1" in metrics["ensemble"]
    rows = read_jsonl(tmp_path / "ensemble" / "predictions.jsonl")
    assert all(row["ensemble"]["prediction"] == row["tag"]["prediction"] for row in rows)
    assert all(row["ensemble"]["confidence"] == pytest.approx(row["tag"]["confidence"], abs=1e-5) for row in rows)


def test_runs_that_cannot_be_combined_are_refused(
    classify_lora: Path, classify_full: Path, tag_lora: Path, tmp_path: Path
) -> None:
    def refused(*runs: Path, needle: str, soup: str | None = None) -> None:
        args = ["eval", "--ensemble", *map(str, runs), *(["--soup", soup] if soup else [])]
        result = run_cli_in_process(*args)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert needle in result.stderr, result.stderr

    refused(classify_lora, tag_lora, needle="runs of different tasks cannot be combined")
    fewer = copy_run(classify_full, tmp_path, "fewer-rows")
    test = fewer / "data" / "test.jsonl"
    test.write_text("".join(test.read_text().splitlines(keepends=True)[:-1]))
    refused(classify_lora, fewer, needle="evaluated on different test rows")
    renamed = copy_run(classify_full, tmp_path, "other-labels")
    edit_config(renamed, lambda c: c["data"].update(label_names={0: "bad", 1: "good"}))
    refused(classify_lora, renamed, needle="has labels ['bad', 'good']")
    chat = copy_run(classify_full, tmp_path, "chat")  # a chat run on the same rows
    edit_config(chat, lambda c: c.update(task={"name": "sft"}))
    refused(chat, classify_lora, needle="chat is sft, cls-lora is classify")
    refused(classify_lora, classify_full, needle="--soup merges the LoRA adapters of chat runs", soup="linear")
    with pytest.raises(TunesmithError, match="at least two runs"):
        ensemble_runs([TrainedRun.from_dir(classify_lora)], tmp_path / "one")
