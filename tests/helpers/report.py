"""report.html in a real headless Chromium."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def assert_report_renders(report: Path, tmp_path: Path, *sections: str) -> None:
    """The run's report.html opens in headless Chromium with the given sections and no console errors."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Chromium is needed for this test; `make test` installs Debian's chromium package"
    command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr"]
    dom = subprocess.run([*command, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for section in ("results", "training", "samples", *sections):
        assert f'id="{section}"' in dom.stdout, section
    errors = [line for line in dom.stderr.splitlines() if "CONSOLE" in line and "rror" in line]
    assert not errors, errors
