"""Sweeps shared by several workers through a real PostgreSQL server: trials split without duplicates, a killed
worker's trial failed and retried, the best model chosen once all ended, a later worker continuing the study,
and every bad --storage URL explained before any trial."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from tests.helpers.cli import free_port, run_cli
from tests.helpers.configs import sweep_config
from tests.helpers.postgres import Postgres
from tunesmith.core.errors import TunesmithError
from tunesmith.sweep import load_sweep, run_sweep
from tunesmith.sweep.storage import storage_url

FINISHED = ("COMPLETE", "PRUNED")
HEARTBEAT = {"heartbeat_interval": 1, "grace_period": 4}  # a dead worker is noticed within seconds, not minutes
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def load_trials(url: str, name: str = "tiny") -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.RDBStorage(storage_url(url, Path()))
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials()
    except KeyError:  # the study is not created yet
        return []
    finally:
        storage.engine.dispose()


def test_workers_share_one_study_and_survive_a_killed_one(
    postgres: Postgres, tiny_model_dir: Path, tmp_path: Path
) -> None:
    url = postgres.database("shared")
    rates = [1e-3, 2e-3, 30.0]  # the last is absurd: its validation loss jumps after one step
    space = {
        "training.learning_rate": f"choice({', '.join(map(str, rates))})",
        "training.weight_decay": "uniform(0, 0.1)",
    }
    sweep = {
        "space": space,
        # Popped in order: the two good ones by the two workers, then the bad one by whichever worker finished
        # first, so the pruner has a complete trial to compare it with.
        "enqueue": [{"training.learning_rate": lr} for lr in rates],
        "pruner": "median",
        "startup_trials": 1,
        **HEARTBEAT,
    }
    config = sweep_config(tmp_path, tiny_model_dir, sweep, training={"max_steps": 6})
    sweep_dir = tmp_path / "runs" / "tiny-sweep"
    exe = Path(sys.executable).with_name("tunesmith")
    command = [str(exe), "sweep", str(config), "--trials", "3", "--storage", url, "--workers", "2"]
    log = tmp_path / "sweep.log"
    parent = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=ENV)
    try:
        deadline = time.monotonic() + 300
        while True:  # until a worker is training one of the good trials (it has reported a validation loss)
            running = [t for t in load_trials(url) if t.state.name == "RUNNING" and "last_step" in t.user_attrs]
            if running:
                break
            assert parent.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        killed = running[0]
        os.kill(int(killed.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)  # as if its machine went down
        assert parent.wait(timeout=300) == 0, log.read_text()
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    assert "ended with exit code -9; the other workers finished the study" in log.read_text()

    trials = {t.number: t for t in load_trials(url)}
    finished = [t for t in trials.values() if t.state.name in FINISHED]
    assert len(finished) == 3
    assert trials[killed.number].state.name == "FAIL"  # not RUNNING forever
    others = [t for t in trials.values() if t.state.name == "FAIL" and t.number != killed.number]
    assert all("not run" in t.user_attrs["failure"] for t in others)  # only a trial two workers asked for at once
    assert not [t for t in trials.values() if t.state.name == "RUNNING"]
    retry = next(t for t in finished if t.system_attrs.get("retry_history") == [killed.number])
    assert retry.params == killed.params  # its values were tried again (the pruner may stop them)
    workers = {t.user_attrs["worker"] for t in trials.values() if "run_dir" in t.user_attrs}
    assert len(workers) == 2 and all(w.startswith(f"{socket.gethostname()}:") for w in workers)
    folders = [t.user_attrs["run_dir"] for t in [*finished, trials[killed.number]]]
    assert len(set(folders)) == 4  # each trial ran once, in its own folder
    drawn = [t.params["training.weight_decay"] for t in trials.values() if t.params and t is not retry]
    assert len(drawn) == len(set(drawn)) == 3  # the workers' samplers are seeded apart: no values drawn twice
    bad = next(t for t in finished if t.params["training.learning_rate"] == 30.0)
    assert bad.state.name == "PRUNED" and bad.user_attrs["last_step"] < 6

    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert summary["best"]["value"] == min(t.value for t in finished if t.state.name == "COMPLETE")
    models = sorted(p.parent.name for p in (sweep_dir / "trials").glob("*/model"))
    assert models == [f"trial-{summary['best']['trial']:03d}"]  # decided once, after both workers ended
    rows = json.loads((sweep_dir / "results.json").read_text())
    note = next(r["note"] for r in rows if r["trial"] == killed.number)
    assert note == f"its worker stopped (no heartbeat); retried as trial {retry.number}"
    report = (sweep_dir / "report.html").read_text()
    assert "2 workers" in report and all(w in report for w in workers)

    # Another worker joining later (here: this process) continues the same study and runs only what is missing.
    stamps = {t.number: (Path(t.user_attrs["run_dir"]) / "metrics.jsonl").stat().st_mtime_ns for t in finished}
    summary = run_sweep(load_sweep(config), trials=4, storage=url)
    assert sum(summary["trials"][s] for s in FINISHED) == 4
    for t in finished:
        assert (Path(t.user_attrs["run_dir"]) / "metrics.jsonl").stat().st_mtime_ns == stamps[t.number]
    assert len(list((sweep_dir / "trials").glob("*/model"))) == 1


@pytest.fixture(scope="module")
def locked_out(postgres: Postgres) -> str:
    """A role that may connect to a database it does not own, but not create tables in it (PostgreSQL 15+)."""
    postgres.database("owner_db")
    postgres.execute("CREATE ROLE guest LOGIN PASSWORD 'guest'")
    return postgres.url("guest", "guest", "owner_db")


def bad_url(kind: str, pg: Postgres, locked_out: str) -> str:
    return {
        "wrong-password": pg.url("postgres", "not-the-password"),
        "missing-database": pg.url(database="no_such_db"),
        "unreachable": f"postgresql://postgres:x@127.0.0.1:{free_port()}/postgres",  # nothing listens there
        "missing-driver": pg.url().replace("postgresql:", "postgresql+psycopg2:"),  # psycopg2 is not installed
        "not-a-url": "db.example.org:5432",
        "no-create-right": locked_out,
    }[kind]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("wrong-password", "refused user 'postgres'"),
        ("missing-database", "database 'no_such_db' does not exist"),
        ("unreachable", "cannot reach a database server at 127.0.0.1:"),
        ("missing-driver", "pip install psycopg2-binary"),
        ("not-a-url", "is not a database URL"),
        ("no-create-right", "cannot set up Optuna's tables (permission denied"),
    ],
)
def test_a_bad_storage_url_is_one_clear_message_before_any_trial(
    kind: str, expected: str, postgres: Postgres, locked_out: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = sweep_config(tmp_path, tiny_model_dir, {"space": {"training.learning_rate": "loguniform(1e-4, 1e-2)"}})
    with pytest.raises(TunesmithError) as info:
        run_sweep(load_sweep(config), trials=1, storage=bad_url(kind, postgres, locked_out))
    message = str(info.value)
    assert expected in message and "fix:" in message
    assert "not-the-password" not in message
    assert not (tmp_path / "runs").exists()  # nothing was started


def test_the_cli_reports_a_bad_storage_without_a_traceback(
    postgres: Postgres, tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = sweep_config(tmp_path, tiny_model_dir, {"space": {"training.learning_rate": "loguniform(1e-4, 1e-2)"}})
    wrong = postgres.url(password="not-the-password")
    result = run_cli("sweep", str(config), "--trials", "1", "--storage", wrong, "--workers", "2")
    assert result.returncode == 2, result.stderr
    assert "error:" in result.stderr and "refused user 'postgres'" in result.stderr
    assert "Traceback" not in result.stderr and "not-the-password" not in result.stderr

    with pytest.raises(TunesmithError, match="--workers 2: several workers need a database server"):
        run_sweep(load_sweep(config), trials=1, workers=2)
