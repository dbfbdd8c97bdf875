"""`tunesmith data audit --run` with an sft run that answers with label words (the quickstart's kind of run, on the
real SmolLM2-135M): its label-word probabilities on rows it never trained on rank planted flips first, and the
report names the scorer, its model, that the probabilities are held out, and their accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.curate.test_audit_scorers import sst2_slice
from tests.helpers.cli import run_cli_in_process
from tests.helpers.paths import SST2

PROMPT = "Is the sentiment of this review positive or negative? Answer with one word.\n\nReview: {sentence}"


@pytest.fixture(scope="module")
def label_word_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M with LoRA, a few steps on SST-2 *training* rows, answering negative / positive."""
    from tunesmith.pipeline.run import Run

    folder = tmp_path_factory.mktemp("sft-run")
    config = {
        "model": {"name": "smollm2-135m"},
        "data": {
            "train": str(SST2 / "train.tsv"),
            "train_rows": 32,
            "prompt_template": PROMPT,
            "completion_template": "{label}",
            "label_names": {0: "negative", 1: "positive"},
        },
        "method": {"name": "lora", "lora": {"r": 8, "alpha": 16, "target_modules": "all-linear"}},
        "training": {"max_steps": 4, "batch_size": 8, "learning_rate": 1e-4, "max_seq_len": 128, "packing": False},
        "eval": {"enabled": False},
        "output": {"dir": str(folder / "runs"), "name": "sst2-words"},
    }
    path = folder / "sft.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    run = Run.from_file(path)
    run.open()
    run.prepare()
    run.train()
    return run.dir.root


def test_an_sft_run_ranks_planted_flips_first_and_the_report_says_how(label_word_run: Path, tmp_path: Path) -> None:
    path, labels, flipped = sst2_slice(tmp_path, 100, 0.10, max_words=14)
    saved = tmp_path / "audit.json"
    result = run_cli_in_process(
        "data", "audit", str(path), "--run", str(label_word_run), "--save", str(saved), "--clusters", "3"
    )
    assert result.returncode == 0, result.stderr
    issues = json.loads(saved.read_text())["label_issues"]
    assert issues["scorer"] == "run" and issues["out_of_fold"] is True
    assert "label words' likelihoods; held out: none of these rows is among its training rows" in issues["method"]
    assert issues["scorer_model"].startswith("smollm2-135m (sft, lora)")
    accuracy = issues["oof_accuracy"]
    assert accuracy > 0.6  # against the labels given, 10% of them wrong; a majority guess gets ~0.5
    assert f"scorer run: held-out accuracy {accuracy:.1%} against the labels given; model: smollm2-135m" in (
        result.stdout
    )

    # Rows the audit flags, in its order; rows it does not flag share the last place.
    ranked = issues["ranked_indices"]
    rank = np.full(len(labels), float(len(ranked)))
    rank[ranked] = np.arange(len(ranked))
    clean = [i for i in range(len(labels)) if i not in flipped]
    found = len(set(ranked) & set(flipped))
    print(f"accuracy {accuracy:.3f}; flagged {len(ranked)}, of them flipped {found} of {len(flipped)}")
    assert rank[flipped].mean() < rank[clean].mean()
    assert found / max(len(ranked), 1) > 2 * len(flipped) / len(labels)  # flagged rows: flips well above 10%
