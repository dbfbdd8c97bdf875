"""report.html: self-contained, rendered by a real headless Chromium with every section present."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import write_tiny_config
from tunesmith.run import Run

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


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
    for section in ("results", "training", "confusion", "forgetting", "bias", "errors", "samples", "data", "config"):
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
