"""`eval.prompt_variants`: base and tuned model scored on each instruction template, reported per variant."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.cli import run_cli
from tests.helpers.configs import write_tiny_config
from tunesmith.core.config import load_config
from tunesmith.core.errors import ConfigError

VARIANTS = ["{input}", "Is this review positive or negative? {input}"]


def test_each_prompt_variant_is_scored_for_base_and_tuned(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = write_tiny_config(
        tmp_path,
        tiny_model_dir,
        data={"test_rows": 6},
        training={"max_steps": 3, "learning_rate": 1e-2},
        eval={"prompt_variants": VARIANTS, "bias_probe": False, "forgetting": False, "few_shot": 0},
    )
    result = run_cli("run", str(config))
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "runs" / "tiny"
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    variants = json.loads((run_dir / "eval" / "prompt_variants.json").read_text())
    assert [v["template"] for v in variants["variants"]] == VARIANTS
    for variant in variants["variants"]:
        assert set(variant) == {"template", "base", "tuned"}
        assert {"accuracy", "macro_f1"} <= set(variant["tuned"])
    # "{input}" asks exactly what the test split asks, so it must score exactly as the main evaluation did.
    assert variants["variants"][0]["tuned"] == metrics["tuned"]
    assert variants["variants"][0]["base"] == metrics["base"]
    assert variants["original"] == metrics
    predictions = [json.loads(line) for line in (run_dir / "eval" / "prompt_variants.jsonl").read_text().splitlines()]
    assert len(predictions) == 2 * 6 and predictions[-1]["input"].startswith("Is this review positive or negative?")
    report = (run_dir / "report.html").read_text()
    assert "Prompt variants" in report and "Is this review positive or negative? {input}" in report


def test_a_variant_needs_the_input_placeholder(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = write_tiny_config(tmp_path, tiny_model_dir, eval={"prompt_variants": ["Classify this review."]})
    with pytest.raises(ConfigError, match=r"prompt_variants\[0\].*\{input\}"):
        load_config(config)
