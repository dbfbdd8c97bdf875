"""An ensemble of two SST-2 runs on a tiny model, evaluated end to end through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.cli import run_cli
from tests.helpers.configs import write_tiny_config
from tunesmith.recipes.contract import ChatEvaluation
from tunesmith.recipes.sft import RECIPE, Reply
from tunesmith.ship.ensemble import combine

LABELS = ["negative", "positive"]
QUICK_EVAL = {"max_new_tokens": 3, "batch_size": 6, "few_shot": 0, "forgetting": False, "bias_probe": False}


def test_probability_average_and_vote() -> None:
    sft = RECIPE.evaluation
    assert isinstance(sft, ChatEvaluation)
    a = [Reply("negative", 0.6, [0.6, 0.4]), Reply("positive", 0.9, [0.1, 0.9])]
    b = [Reply("positive", 0.8, [0.2, 0.8]), Reply("positive", 0.7, [0.3, 0.7])]
    averaged = combine(sft, [a, b], LABELS)
    assert [r.text for r in averaged] == ["positive", "positive"]  # 0.6 vs 0.4 on row 0
    assert averaged[0].label_probs == pytest.approx([0.4, 0.6])
    votes = combine(sft, [[Reply("negative", 0)], [Reply("Positive!", 0)], [Reply("positive", 0)]], LABELS)
    assert votes[0].text == "Positive!"  # two of three say positive


def test_ensemble_of_two_runs_end_to_end(tiny_model_dir: Path, tmp_path: Path) -> None:
    runs = []
    for seed in (1, 2):
        folder = tmp_path / f"seed{seed}"
        folder.mkdir()
        config = write_tiny_config(
            folder, tiny_model_dir, training={"seed": seed, "max_steps": 3, "learning_rate": 5e-3},
            eval=QUICK_EVAL, output={"dir": str(tmp_path / "runs"), "name": f"seed{seed}"},
        )  # fmt: skip
        result = run_cli("run", str(config))
        assert result.returncode == 0, result.stderr
        runs.append(str(tmp_path / "runs" / f"seed{seed}"))
    result = run_cli("eval", "--ensemble", *runs, "--soup", "linear")
    assert result.returncode == 0, result.stderr
    written = json.loads((tmp_path / "runs" / "ensemble-seed1+seed2" / "metrics.json").read_text())
    assert written["members"] == ["seed1", "seed2"]
    assert set(written["metrics"]) == {"seed1", "seed2", "ensemble", "soup_linear"}
    assert written["method"] == "probability average"
    assert "ensemble" in result.stdout and "soup_linear" in result.stdout
    predictions = (tmp_path / "runs" / "ensemble-seed1+seed2" / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 12


def test_ensemble_refuses_runs_on_different_rows(tiny_model_dir: Path, tmp_path: Path) -> None:
    runs = []
    for rows in (12, 10):
        folder = tmp_path / f"rows{rows}"
        folder.mkdir()
        config = write_tiny_config(
            folder, tiny_model_dir, data={"test_rows": rows}, training={"max_steps": 1}, eval=QUICK_EVAL,
            output={"dir": str(tmp_path / "runs"), "name": f"rows{rows}"},
        )  # fmt: skip
        assert run_cli("run", str(config)).returncode == 0
        runs.append(str(tmp_path / "runs" / f"rows{rows}"))
    result = run_cli("eval", "--ensemble", *runs)
    assert result.returncode == 2 and "different test rows" in result.stderr
