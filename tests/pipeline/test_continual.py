"""Continual learning: `tunesmith run CONFIG --from RUN` starts from the earlier run's weights, replays its rows,
and measures forgetting on its test split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.helpers.cli import run_cli
from tests.helpers.configs import write_tiny_config
from tests.helpers.paths import SST2
from tunesmith.core.config import load_config
from tunesmith.core.errors import ConfigError
from tunesmith.pipeline.continual import earlier_run

QUIET_EVAL = {"max_new_tokens": 3, "batch_size": 6, "baseline": False, "bias_probe": False, "forgetting": False}


def _config(folder: Path, model_dir: Path, name: str, evaluate: bool = True, **sections: dict) -> Path:
    sub = folder / name
    sub.mkdir()
    return write_tiny_config(
        sub,
        model_dir,
        eval={**QUIET_EVAL, "enabled": evaluate},
        output={"dir": str(folder / "runs"), "name": name},
        **sections,
    )


def test_from_starts_at_the_earlier_weights_replays_and_measures_forgetting(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    first = _config(tmp_path, tiny_model_dir, "first", training={"max_steps": 4, "learning_rate": 1e-2})
    assert run_cli("run", str(first)).returncode == 0
    first_dir = tmp_path / "runs" / "first"
    earlier = load_file(str(first_dir / "model" / "adapter_model.safetensors"))
    assert any(v.abs().max() > 0 for k, v in earlier.items() if "lora_B" in k)  # a fresh adapter has B = 0

    # Near-zero learning rate: what the continued run saves is what it started from, so it must be the earlier
    # adapter (a fresh LoRA would start with every lora_B at zero).
    new_data = {"train": str(SST2 / "dev.tsv"), "test": str(SST2 / "dev.tsv"), "train_rows": 24, "test_rows": 8}
    still = _config(
        tmp_path, tiny_model_dir, "still", False, data=new_data, training={"max_steps": 1, "learning_rate": 1e-12}
    )
    result = run_cli("run", str(still), "--from", str(first_dir))
    assert result.returncode == 0, result.stderr
    assert f"starting from {first_dir / 'model'}" in result.stderr.replace("\n", "")
    continued = load_file(str(tmp_path / "runs" / "still" / "model" / "adapter_model.safetensors"))
    assert continued.keys() == earlier.keys()
    for key, value in earlier.items():
        assert torch.allclose(continued[key], value, atol=1e-8), key

    # A real continuation with replay of the earlier training rows and forgetting measured on its test split.
    later = _config(tmp_path, tiny_model_dir, "later", data=new_data, training={"max_steps": 3, "learning_rate": 1e-2})
    result = run_cli("run", str(later), "--from", str(first_dir), "--replay", "0.25")
    assert result.returncode == 0, result.stderr
    later_dir = tmp_path / "runs" / "later"
    saved = yaml.safe_load((later_dir / "config.yaml").read_text())
    assert saved["model"]["from_run"] == str(first_dir.resolve()) and saved["data"]["replay"] == 0.25
    train_rows = [json.loads(line) for line in (later_dir / "data" / "train.jsonl").read_text().splitlines()]
    replayed = [r for r in train_rows if r["meta"].get("replay")]
    first_rows = {json.dumps(r["messages"]) for r in map(json.loads, (first_dir / "data" / "train.jsonl").open())}
    assert replayed and all(json.dumps(r["messages"]) in first_rows for r in replayed)
    assert len(replayed) == round(0.25 * (len(train_rows) - len(replayed)) / 0.75)
    forgetting = json.loads((later_dir / "eval" / "forgetting_earlier.json").read_text())
    earlier_metrics = json.loads((first_dir / "eval" / "metrics.json").read_text())["tuned"]
    assert forgetting["rows"] == 12 and forgetting["earlier"] == earlier_metrics
    assert forgetting["change"]["accuracy"] == pytest.approx(
        forgetting["now"]["accuracy"] - earlier_metrics["accuracy"]
    )
    assert (later_dir / "eval-earlier" / "predictions.jsonl").is_file()

    # A different method cannot continue the same weights.
    other = load_config(later, [f"model.from_run={first_dir}", "method.lora.r=4"])
    with pytest.raises(ConfigError, match="method settings differ"):
        earlier_run(other)
