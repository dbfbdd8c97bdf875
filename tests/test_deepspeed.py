"""DeepSpeed ZeRO-2/3 on CPU (DeepSpeed's CPU accelerator, gloo): two processes compute what one process computes,
and a resumed run ends where an uninterrupted one does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO, free_port, write_tiny_config


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _adapter(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "model" / "adapter_model.safetensors")


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_matches_one_process_and_resumes_exactly(stage: int, tiny_model_dir: Path, tmp_path: Path) -> None:
    """The shipped ZeRO config, two processes on a CPU machine: the same losses, learning rates, gradient norms and
    final adapter as one process; killed after step 2 and resumed, the same adapter bit for bit.

    About 27 training examples with 8 per step make step 4 short: one rank's micro-batch is empty and must still
    run a forward and backward (ZeRO's collectives), contributing nothing; the 5 validation examples split 3 and 2.
    Steps 5-6 start the second epoch.
    """
    config = write_tiny_config(
        tmp_path,
        tiny_model_dir,
        data={"train_rows": 29, "validation_fraction": 0.2, "validation_rows": 5},
        method={"lora": {"dropout": 0.0}},  # ranks draw different dropout noise; the comparison is arithmetic
        training={
            "max_steps": 6,
            "batch_size": 2,
            "grad_accum": 2,
            "learning_rate": 1e-3,
            "warmup_ratio": 0.5,
            "save_every": 2,
            "keep_checkpoints": 5,
            "eval_every": 2,  # validation on both ranks; the best weights are gathered, kept and restored
            "early_stopping_patience": 3,
        },
        eval={"enabled": False},
    )
    tunesmith = str(Path(sys.executable).with_name("tunesmith"))
    _run([tunesmith, "train", str(config), "--set", "training.batch_size=4", "--set", "output.name=single"], tmp_path)
    _run([tunesmith, "prepare", str(config)], tmp_path)
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    zero = REPO / "configs" / "accelerate" / f"deepspeed-zero{stage}.yaml"
    launch = [accelerate, "launch", "--config_file", str(zero), "--num_processes", "2", "--main_process_port"]
    launch += [str(free_port()), "-m", "tunesmith.cli"]  # not the config's 29500: another launch may hold it
    _run([*launch, "train", str(config)], tmp_path)

    runs, run = tmp_path / "runs", tmp_path / "runs" / "tiny"
    trained = json.loads((run / "state.json").read_text())["stages"]["train"]
    assert (trained["distributed"], trained["processes"]) == ("DEEPSPEED", 2)
    one, two = _metrics(runs / "single"), _metrics(run)
    assert [r["targets"] for r in one] == [r["targets"] for r in two]
    for a, b in zip(one, two, strict=True):
        assert abs(a["loss"] - b["loss"]) <= 1e-5, (a, b)
        assert a["lr"] == pytest.approx(b["lr"])
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
        assert a.get("val_loss") == pytest.approx(b.get("val_loss"), abs=1e-5)
    assert sum("val_loss" in r for r in two) == 3
    single, straight = _adapter(runs / "single"), _adapter(run)
    assert single.keys() == straight.keys() and single
    for name, weight in single.items():
        assert weight.shape == straight[name].shape and weight.numel() > 0, name
        assert torch.allclose(weight, straight[name], atol=1e-5, rtol=0), name
    assert sorted(p.name for p in (run / "checkpoints" / "step-2").glob("zero-optimizer-rank-*.pt")) == [
        "zero-optimizer-rank-0.pt",
        "zero-optimizer-rank-1.pt",
    ]

    for leftover in ("checkpoints/step-4", "checkpoints/step-6", "model"):  # as if killed during step 3
        shutil.rmtree(run / leftover)
    state = json.loads((run / "state.json").read_text())
    del state["stages"]["train"]
    (run / "state.json").write_text(json.dumps(state))
    _run([*launch, "train", str(config), "--resume"], tmp_path)
    resumed = _adapter(run)
    assert resumed.keys() == straight.keys()
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)
    assert _metrics(run) == [
        {**r, **{k: _metrics(run)[i][k] for k in ("tokens_per_s", "elapsed_s")}} for i, r in enumerate(two)
    ]


def test_zero3_full_fine_tuning_saves_every_weight_whole(tiny_model_dir: Path, tmp_path: Path) -> None:
    """ZeRO-3 partitions every weight; the saved model must hold them gathered, equal to one process's."""
    config = write_tiny_config(
        tmp_path,
        tiny_model_dir,
        method={"name": "full"},
        training={"max_steps": 3, "batch_size": 2, "learning_rate": 1e-4},
        eval={"enabled": False},
    )
    tunesmith = str(Path(sys.executable).with_name("tunesmith"))
    _run([tunesmith, "train", str(config), "--set", "training.batch_size=4", "--set", "output.name=single"], tmp_path)
    _run([tunesmith, "prepare", str(config)], tmp_path)
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    zero3 = REPO / "configs" / "accelerate" / "deepspeed-zero3.yaml"
    launch = [accelerate, "launch", "--config_file", str(zero3), "--num_processes", "2"]
    _run([*launch, "--main_process_port", str(free_port()), "-m", "tunesmith.cli", "train", str(config)], tmp_path)
    single, double = (load_file(tmp_path / "runs" / n / "model" / "model.safetensors") for n in ("single", "tiny"))
    assert single.keys() == double.keys() and single
    for name, weight in single.items():
        assert weight.shape == double[name].shape and weight.numel() > 0, name
        assert torch.allclose(weight, double[name], atol=1e-5, rtol=0), name
