"""report.html: self-contained, rendered by a real headless Chromium with every section present."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.configs import write_tiny_config
from tests.helpers.report import CHROMIUM_FLAGS
from tunesmith.pipeline.run import Run


@pytest.fixture(scope="module")
def report(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    config = write_tiny_config(folder, tiny_model_dir, eval={"max_new_tokens": 3, "batch_size": 6, "few_shot": 2})
    run = Run.from_file(config)
    run.run()
    return run.dir.root / "report.html"


def test_report_is_self_contained(report: Path) -> None:
    html = report.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "the report must not fetch anything"
    for section in (
        "results", "training", "confusion", "forgetting", "bias", "errors", "samples", "data", "environment", "config"
    ):  # fmt: skip
        assert f'id="{section}"' in html, section
    assert html.count("<svg") == 2  # loss and learning-rate curves
    assert "base 2 shot" in html and "majority class" in html


def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Chromium is needed for this test; `make test` installs Debian's chromium package"
    profile = tmp_path / "profile"
    common = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0"]
    dom = subprocess.run(
        [*common, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120, check=True
    )
    assert "Base vs tuned on the test split" in dom.stdout
    assert dom.stdout.count("<svg") == 2
    console_errors = [line for line in dom.stderr.splitlines() if "CONSOLE" in line and "rror" in line]
    assert not console_errors, console_errors
    png = tmp_path / "report.png"
    subprocess.run(
        [*common, f"--screenshot={png}", "--window-size=1200,2400", report.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    assert png.stat().st_size > 20_000  # a rendered page, not a blank one


def test_every_run_records_its_environment(report: Path) -> None:
    import torch
    import transformers

    env = json.loads((report.parent / "environment.json").read_text())
    assert env["packages"]["torch"] == torch.__version__ and env["packages"]["transformers"] == transformers.__version__
    assert env["python"] == platform.python_version() and env["cpu"]["logical_cpus"] == os.cpu_count()
    assert env["cpu"]["threads"] == torch.get_num_threads() and env["cpu"]["model"]
    assert env["gpu"] == [] if not torch.cuda.is_available() else env["gpu"][0]["memory_gib"] > 0
    assert env["seeds"]["training.seed"] == 42  # every *seed setting of the resolved config
    from tunesmith.engine.precision import choose_precision

    assert env["precision"] == choose_precision("auto").to_dict()  # what training computes in here, and why
    assert len(env["tunesmith"]["git_commit"]) == 40  # the tests run from a checkout
    html = report.read_text(encoding="utf-8")
    assert f"torch {torch.__version__}" in html and env["cpu"]["model"] in html


def test_an_environment_that_cannot_be_fully_read_says_what_is_missing(tmp_path: Path) -> None:
    """No git and no nvidia-smi on PATH: the record keeps what it could read and names the rest."""
    bare = {**os.environ, "PATH": str(tmp_path)}  # an empty folder: no command can be found
    done = subprocess.run(
        [sys.executable, "-m", "tunesmith.core.environment"], capture_output=True, text=True, env=bare, check=True
    )
    env = json.loads(done.stdout)
    assert env["tunesmith"]["git_commit"] is None
    assert any(m.startswith("git commit: the git command is not installed") for m in env["missing"])
    assert env["packages"]["torch"] and env["cpu"]["model"]  # the rest is still recorded
