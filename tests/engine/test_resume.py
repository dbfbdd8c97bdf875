"""A real `tunesmith train` killed with SIGKILL mid-run and resumed ends bitwise equal to an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.helpers.cli import run_cli
from tests.helpers.configs import write_tiny_config

STEPS, SAVE_EVERY = 24, 4


def _train(config: Path, log: Path, *args: str) -> subprocess.Popen[bytes]:
    """Start `tunesmith train` in the background, its output going to ``log`` (a pipe could fill and block it)."""
    exe = Path(sys.executable).with_name("tunesmith")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    with log.open("wb") as handle:
        return subprocess.Popen([str(exe), "train", str(config), *args], env=env, stdout=handle, stderr=handle)


def _finish(process: subprocess.Popen[bytes], log: Path) -> str:
    process.wait(timeout=600)
    text = log.read_text(encoding="utf-8", errors="replace")
    assert process.returncode == 0, text[-3000:]
    return text


def _adapter(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "model" / "adapter_model.safetensors")


def test_sigkill_then_resume_is_bitwise_equal_to_an_uninterrupted_run(tiny_model_dir: Path, tmp_path: Path) -> None:
    # LoRA with dropout on, so the RNG state matters as much as the weights and the optimizer.
    config = write_tiny_config(
        tmp_path,
        tiny_model_dir,
        training={"max_steps": STEPS, "batch_size": 4, "save_every": SAVE_EVERY, "learning_rate": 3e-3},
        eval={"enabled": False},
    )
    runs = tmp_path / "runs"
    straight = _train(config, tmp_path / "straight.log", "--set", "output.name=straight")
    victim = _train(config, tmp_path / "victim.log")
    checkpoints = runs / "tiny" / "checkpoints"
    deadline = time.monotonic() + 300
    while not (checkpoints / f"step-{2 * SAVE_EVERY}").is_dir():
        assert victim.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    assert not (runs / "tiny" / "model").exists()
    killed_at = max(int(p.name.split("-")[1]) for p in checkpoints.iterdir() if p.name.startswith("step-"))
    assert killed_at < STEPS

    refused = run_cli("train", str(config))  # forgetting --resume must not silently start over
    assert refused.returncode == 2 and "--resume" in refused.stderr

    resumed = _finish(_train(config, tmp_path / "resumed.log", "--resume"), tmp_path / "resumed.log")
    assert f"continuing from step {killed_at}" in resumed
    _finish(straight, tmp_path / "straight.log")

    ours, reference = _adapter(runs / "tiny"), _adapter(runs / "straight")
    assert ours.keys() == reference.keys() and ours
    assert all(torch.equal(ours[k], reference[k]) for k in reference)
    steps = [json.loads(line)["step"] for line in (runs / "tiny" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, STEPS + 1))  # no step lost or logged twice
    kept = sorted(p.name for p in checkpoints.iterdir())
    assert kept == [f"step-{STEPS - SAVE_EVERY}", f"step-{STEPS}"]  # keep_checkpoints: 2, no temp folders left


def test_absurd_learning_rate_stops_with_a_clear_message_and_the_good_checkpoint(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = write_tiny_config(
        tmp_path,
        tiny_model_dir,
        method={"name": "full"},
        training={"max_steps": 8, "learning_rate": 1e30, "save_every": 1, "max_bad_steps": 2},
        eval={"enabled": False},
    )
    result = run_cli("train", str(config))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "training.max_bad_steps=2" in result.stderr and "training.learning_rate" in result.stderr
    run_dir = tmp_path / "runs" / "tiny"
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-1"]  # the last finite step
    assert load_file(run_dir / "checkpoints" / "step-1" / "trainable.safetensors")
    assert not (run_dir / "model").exists()
    assert "train" not in json.loads((run_dir / "state.json").read_text())["stages"]


def test_resume_before_any_checkpoint_starts_over_without_duplicate_metrics(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A run killed before its first checkpoint: --resume trains from the start and logs each step once."""
    config = write_tiny_config(
        tmp_path, tiny_model_dir, training={"max_steps": 2, "save_every": 50}, eval={"enabled": False}
    )
    assert run_cli("train", str(config)).returncode == 0
    run = tmp_path / "runs" / "tiny"
    state = json.loads((run / "state.json").read_text())
    del state["stages"]["train"]  # as if killed before the end
    (run / "state.json").write_text(json.dumps(state))
    result = run_cli("train", str(config), "--resume")
    assert result.returncode == 0, result.stderr[-2000:]
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
