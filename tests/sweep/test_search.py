"""Hyperparameter sweeps on the tiny model: completes, resumes after a real kill, prunes a planted bad trial."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from tests.helpers.cli import run_cli
from tests.helpers.configs import sweep_config
from tunesmith.core.config import load_config
from tunesmith.core.errors import ConfigError
from tunesmith.sweep import load_sweep, run_sweep

FINISHED = ("COMPLETE", "PRUNED")


def _results(sweep_dir: Path) -> list[dict]:
    path = sweep_dir / "results.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else []
    except json.JSONDecodeError:
        return []


def test_sweep_completes_and_resumes_after_a_kill(tiny_model_dir: Path, tmp_path: Path) -> None:
    space = {"training.learning_rate": "loguniform(1e-4, 1e-2)", "method.lora.r": "choice(2, 4, 8)"}
    config = sweep_config(
        tmp_path, tiny_model_dir, {"space": space, "pruner": "none", "seed": 3}, training={"max_steps": 3}
    )
    sweep_dir = tmp_path / "runs" / "tiny-sweep"
    exe = Path(sys.executable).with_name("tunesmith")
    log = tmp_path / "first.log"
    with log.open("w") as handle:
        process = subprocess.Popen(
            [str(exe), "sweep", str(config), "--trials", "4"], stdout=handle, stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )  # fmt: skip
    deadline = time.monotonic() + 300
    while sum(r["state"] in FINISHED for r in _results(sweep_dir)) < 2:
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)  # no chance to clean up: as if the machine went down
    process.wait()
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{sweep_dir / 'study.db'}")
    before = {t.number: {"state": t.state.name, "value": t.value, "run_dir": t.user_attrs["run_dir"]}
              for t in study.trials if t.state.name in FINISHED}  # fmt: skip
    assert len(before) in (2, 3)
    stamps = {n: (Path(r["run_dir"]) / "state.json").stat().st_mtime_ns for n, r in before.items()}

    result = run_cli("sweep", str(config), "--trials", "4")
    assert result.returncode == 0, result.stderr
    assert f"{len(before)} of 4 trials already finished" in result.stderr
    rows = json.loads((sweep_dir / "results.json").read_text())
    finished = [r for r in rows if r["state"] in FINISHED]
    assert len(finished) == 4
    for number, row in before.items():  # the finished trials were not run again
        again = next(r for r in rows if r["trial"] == number)
        assert again["state"] == row["state"] and again["value"] == row["value"]
        assert (Path(row["run_dir"]) / "state.json").stat().st_mtime_ns == stamps[number]
    interrupted = [r for r in rows if r["state"] == "FAIL"]
    assert all("interrupted" in r["note"] for r in interrupted)

    summary = json.loads((sweep_dir / "summary.json").read_text())
    best = summary["best"]
    values = [r["value"] for r in finished if r["state"] == "COMPLETE"]
    assert best["value"] == min(values)
    best_config = load_config(sweep_dir / "best.yaml")  # a runnable config with the best values
    assert best_config.training.learning_rate == pytest.approx(best["params"]["training.learning_rate"])
    assert best_config.method.lora.r == best["params"]["method.lora.r"]
    models = sorted(p.parent.name for p in (sweep_dir / "trials").glob("*/model"))
    assert models == [f"trial-{best['trial']:03d}"]  # the other trials' models were deleted
    assert (sweep_dir / "trials" / f"trial-{best['trial']:03d}" / "model" / "adapter_model.safetensors").is_file()
    header = (sweep_dir / "results.csv").read_text().splitlines()[0]
    assert "params.training.learning_rate" in header and "params.method.lora.r" in header
    report = (sweep_dir / "report.html").read_text()
    assert report.count("<svg") == 2 and "Optimisation history" in report and "Parameter importance" in report
    assert "val_loss" in result.stdout and f"best: trial {best['trial']}" in result.stdout


def test_pruner_stops_a_planted_bad_trial(tiny_model_dir: Path, tmp_path: Path) -> None:
    rates = [1e-3, 2e-3, 30.0]  # the last is absurd: its validation loss jumps after one step
    sweep = {
        "space": {"training.learning_rate": f"choice({', '.join(map(str, rates))})"},
        "enqueue": [{"training.learning_rate": lr} for lr in rates],
        "pruner": "median",
        "startup_trials": 2,
    }
    config = sweep_config(tmp_path, tiny_model_dir, sweep, training={"max_steps": 5})
    storage = f"sqlite:///{tmp_path / 'shared.db'}"  # an explicit storage URL is used as given (as PostgreSQL is)
    summary = run_sweep(load_sweep(config), trials=3, storage=storage)
    rows = {
        r["params.training.learning_rate"]: r
        for r in json.loads(Path(summary["report"]).with_name("results.json").read_text())
    }
    bad = rows[30.0]
    assert bad["state"] == "PRUNED" and bad["last_step"] < 5
    assert rows[1e-3]["state"] == rows[2e-3]["state"] == "COMPLETE"
    assert summary["best"]["params"]["training.learning_rate"] != 30.0
    assert (tmp_path / "shared.db").is_file() and not (tmp_path / "runs" / "tiny-sweep" / "study.db").exists()


def test_the_space_is_checked_against_the_schema_before_any_trial(tiny_model_dir: Path, tmp_path: Path) -> None:
    def error(space: dict, **sections: dict) -> str:
        config = sweep_config(tmp_path, tiny_model_dir, {"space": space}, **sections)
        with pytest.raises(ConfigError) as info:
            load_sweep(config)
        return str(info.value)

    assert "did you mean 'training.learning_rate'" in error({"training.learnin_rate": "loguniform(1e-5, 1e-3)"})
    assert "method.lora.dropout" in error({"method.lora.dropout": "uniform(0.0, 1.5)"})
    assert "not a distribution" in error({"training.learning_rate": "gaussian(1, 2)"})
    assert "low (0.1) must be below high" in error({"training.weight_decay": "uniform(0.1, 0.01)"})
    assert "is a section" in error({"method.lora": "choice(1, 2)"})
    message = error({"training.learning_rate": "loguniform(1e-5, 1e-3)"}, training={"eval_every": None})
    assert "training.eval_every" in message
    assert not (tmp_path / "runs").exists()  # nothing ran


def test_run_ignores_the_sweep_section(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = sweep_config(tmp_path, tiny_model_dir, {"space": {"training.learning_rate": "loguniform(1e-5, 1e-3)"}})
    assert load_config(config).training.learning_rate == 2e-4
