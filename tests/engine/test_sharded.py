"""Sharded training on CPU with gloo (DeepSpeed ZeRO-2/3 on DeepSpeed's CPU accelerator, FSDP2 on a CPU mesh): two
processes compute what one process computes, a resumed run ends where an uninterrupted one does, and the saved
model holds every weight whole."""

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

from tests.helpers.cli import free_port
from tests.helpers.configs import write_tiny_config
from tests.helpers.paths import REPO


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _adapter(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "model" / "adapter_model.safetensors")


SHARDED = {"deepspeed-zero2": "DEEPSPEED", "deepspeed-zero3": "DEEPSPEED", "fsdp": "FSDP"}


def _launch(name: str) -> list[str]:
    """`accelerate launch` with a shipped config, two processes, on a free port (another launch may hold 29500)."""
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    config = REPO / "configs" / "accelerate" / f"{name}.yaml"
    options = ["--config_file", str(config), "--num_processes", "2", "--main_process_port", str(free_port())]
    return [accelerate, "launch", *options, "-m", "tunesmith.cli"]


@pytest.mark.parametrize("setup", SHARDED)
def test_sharded_run_matches_one_process_and_resumes_exactly(setup: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    """The shipped config, two processes on a CPU machine: the same losses, learning rates, gradient norms and
    final adapter as one process; killed after step 2 and resumed, the same adapter bit for bit.

    About 27 training examples with 8 per step make step 4 short: one rank's micro-batch is empty and must still
    run a forward and backward (ZeRO's and FSDP's collectives), contributing nothing; the 5 validation examples
    split 3 and 2. Steps 5-6 start the second epoch.
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
    launch = _launch(setup)
    _run([*launch, "train", str(config)], tmp_path)

    runs, run = tmp_path / "runs", tmp_path / "runs" / "tiny"
    trained = json.loads((run / "state.json").read_text())["stages"]["train"]
    assert (trained["distributed"], trained["processes"]) == (SHARDED[setup], 2)
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
    step2 = run / "checkpoints" / "step-2"
    partitions = sorted(p.name for p in step2.glob("zero-optimizer-rank-*.pt"))
    if setup == "fsdp":  # the sharded optimizer state gathered whole, keyed by parameter name
        moments = torch.load(step2 / "state.pt", weights_only=False)["optimizer_by_name"]["state"]
        weights = load_file(step2 / "trainable.safetensors")
        assert not partitions and moments.keys() == weights.keys()
        assert all(moments[n]["exp_avg"].shape == weights[n].shape for n in weights)  # whole, not one shard
    else:
        assert partitions == ["zero-optimizer-rank-0.pt", "zero-optimizer-rank-1.pt"]

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


@pytest.mark.parametrize("setup", ["deepspeed-zero3", "fsdp"])
def test_sharded_full_fine_tuning_saves_every_weight_whole(setup: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    """ZeRO-3 and FSDP shard every weight; the saved model must hold them gathered, equal to one process's."""
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
    _run([*_launch(setup), "train", str(config)], tmp_path)
    single, double = (load_file(tmp_path / "runs" / n / "model" / "model.safetensors") for n in ("single", "tiny"))
    assert single.keys() == double.keys() and single
    for name, weight in single.items():
        assert weight.shape == double[name].shape and weight.numel() > 0, name
        assert torch.allclose(weight, double[name], atol=1e-5, rtol=0), name


def test_a_sharded_launch_refuses_prune_then_lora_before_training(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Pruning with LoRA merges the adapter before saving, which sharded weights cannot be: say so at the start,
    with the CLI's usual exit code, on every process, rather than after the whole run."""
    config = write_tiny_config(
        tmp_path, tiny_model_dir, method={"name": "prune", "prune": {"then": "lora"}}, eval={"enabled": False}
    )
    tunesmith = str(Path(sys.executable).with_name("tunesmith"))
    _run([tunesmith, "prepare", str(config)], tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [*_launch("fsdp"), "train", str(config)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert result.returncode != 0
    assert result.stderr.count("sharded weights (FSDP, DeepSpeed ZeRO-3) cannot be") == 2, result.stderr[-3000:]
    assert "exitcode  : 2" in result.stderr  # the CLI's user-error code, not a crash
    assert not (tmp_path / "runs" / "tiny" / "metrics.jsonl").exists()  # refused before any step
