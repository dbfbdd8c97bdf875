"""DDP on CPU (gloo): two processes launched by `accelerate launch` compute what one process computes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.helpers.cli import free_port
from tests.helpers.configs import write_tiny_config
from tests.helpers.paths import REPO

WORKER = Path(__file__).with_name("ddp_worker.py")


def _run(args: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]


def test_two_processes_match_one(tiny_model_dir: Path, tmp_path: Path) -> None:
    one, two = tmp_path / "one.pt", tmp_path / "two.pt"
    _run([sys.executable, str(WORKER), str(tiny_model_dir), str(one)], tmp_path)
    accelerate = Path(sys.executable).with_name("accelerate")
    launch = [str(accelerate), "launch", "--config_file", str(REPO / "configs" / "accelerate" / "ddp.yaml")]
    launch += ["--main_process_port", str(free_port())]
    _run([*launch, "--num_processes", "2", str(WORKER), str(tiny_model_dir), str(two)], tmp_path)
    single, double = torch.load(one), torch.load(two)
    assert (single["world"], double["world"]) == (1, 2)
    assert single["targets"] == double["targets"] > 0
    assert abs(single["loss"] - double["loss"]) <= 1e-5
    assert single["grads"].keys() == double["grads"].keys() and single["grads"]
    for name, grad in single["grads"].items():
        assert grad.abs().max() > 0, name
        assert torch.allclose(grad, double["grads"][name], atol=1e-5, rtol=0), name
    assert abs(single["final"] - double["final"]) <= 1e-5
    for name, weight in single["weights"].items():
        assert torch.allclose(weight, double["weights"][name], atol=1e-5, rtol=0), name


def test_tunesmith_train_under_accelerate_launch_matches_one_process(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The real CLI: processes must form one group (not each train alone) and end where one process ends."""
    config = write_tiny_config(
        tmp_path,
        tiny_model_dir,
        method={"lora": {"dropout": 0.0}},  # ranks draw different dropout noise; the comparison is arithmetic
        training={"max_steps": 4, "batch_size": 2, "learning_rate": 1e-3},
        eval={"enabled": False},
    )
    tunesmith = str(Path(sys.executable).with_name("tunesmith"))
    # One process with batches of 4 sees the same 4 examples per step as two processes with batches of 2.
    _run([tunesmith, "train", str(config), "--set", "training.batch_size=4", "--set", "output.name=single"], tmp_path)
    _run([tunesmith, "prepare", str(config)], tmp_path)  # once, before the processes start
    accelerate = Path(sys.executable).with_name("accelerate")
    launch = [str(accelerate), "launch", "--config_file", str(REPO / "configs" / "accelerate" / "ddp.yaml")]
    launch += ["--main_process_port", str(free_port())]
    _run([*launch, "--num_processes", "2", "-m", "tunesmith.cli", "train", str(config)], tmp_path)
    runs = tmp_path / "runs"
    one = [json.loads(line) for line in (runs / "single" / "metrics.jsonl").read_text().splitlines()]
    two = [json.loads(line) for line in (runs / "tiny" / "metrics.jsonl").read_text().splitlines()]
    assert [r["targets"] for r in one] == [r["targets"] for r in two]  # the same examples in every step
    assert all(abs(a["loss"] - b["loss"]) <= 1e-5 for a, b in zip(one, two, strict=True))
    single, double = (load_file(runs / name / "model" / "adapter_model.safetensors") for name in ("single", "tiny"))
    assert single.keys() == double.keys() and single
    for name, weight in single.items():
        assert torch.allclose(weight, double[name], atol=1e-5, rtol=0), name


def test_ddp_resume_is_bitwise_equal_to_an_uninterrupted_ddp_run(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Every rank's RNG state (LoRA dropout is on) is saved and restored, so the processes pick up exactly.

    The resumed run is launched with `torchrun` instead of `accelerate launch`: both must form the same group.
    """
    training = {"max_steps": 12, "batch_size": 2, "save_every": 4, "keep_checkpoints": 5, "learning_rate": 3e-3}
    configs = {}
    for name in ("straight", "resumed"):
        folder = tmp_path / name
        folder.mkdir()
        configs[name] = write_tiny_config(
            folder,
            tiny_model_dir,
            training=training,
            eval={"enabled": False},
            output={"dir": str(tmp_path / "runs"), "name": name},
        )
    tunesmith = str(Path(sys.executable).with_name("tunesmith"))
    accelerate = Path(sys.executable).with_name("accelerate")
    launch = [str(accelerate), "launch", "--config_file", str(REPO / "configs" / "accelerate" / "ddp.yaml")]
    launch += ["--main_process_port", str(free_port())]
    launch += ["--num_processes", "2", "-m", "tunesmith.cli", "train"]
    for config in configs.values():
        _run([tunesmith, "prepare", str(config)], tmp_path)
        _run([*launch, str(config)], tmp_path)
    run = tmp_path / "runs" / "resumed"  # make it look killed between step 4 and step 8
    for leftover in ("checkpoints/step-8", "checkpoints/step-12", "model"):
        shutil.rmtree(run / leftover)
    state = json.loads((run / "state.json").read_text())
    del state["stages"]["train"]
    (run / "state.json").write_text(json.dumps(state))
    torchrun = [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node", "2"]
    torchrun += ["--master_port", str(free_port()), "-m", "tunesmith.cli", "train"]
    _run([*torchrun, str(configs["resumed"]), "--resume"], tmp_path)
    assert json.loads((run / "state.json").read_text())["stages"]["train"]["processes"] == 2
    ours = load_file(run / "model" / "adapter_model.safetensors")
    reference = load_file(tmp_path / "runs" / "straight" / "model" / "adapter_model.safetensors")
    assert ours.keys() == reference.keys() and ours
    assert all(torch.equal(ours[k], reference[k]) for k in reference)
