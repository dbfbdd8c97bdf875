"""One progress display for every long task: counts, rate and ETA; plain lines every 10% off a terminal, none for a
task done in two seconds; a line per item for sweeps."""

from __future__ import annotations

import re

import pytest

from tunesmith.core import progress as progress_module
from tunesmith.core.progress import Progress, track


def test_plain_lines_say_count_rate_and_eta(capfd: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    assert list(track(range(1000), "quick", unit="rows")) == list(range(1000))
    assert capfd.readouterr().err == ""  # short tasks are silent
    monkeypatch.setattr(progress_module, "QUIET_SECONDS", 0.0)  # as if each step were slow
    with Progress(20, "dedup", unit="rows") as progress:
        for _ in range(20):
            progress.advance()
    lines = capfd.readouterr().err.splitlines()
    assert 2 <= len(lines) <= 11  # at most one per tenth (fast loops look at the clock less often), and an end
    assert re.fullmatch(r"dedup: \d+/20 rows \(\d+%\)  [\d,.]+ rows/s  eta \d+s", lines[0]), lines[0]
    assert re.fullmatch(r"dedup: 20 rows in \d+s \([\d,.]+ rows/s\)", lines[-1]), lines[-1]


def test_sweeps_print_a_line_per_trial(capfd: pytest.CaptureFixture) -> None:
    with Progress(3, "sweep", unit="trials", lines=True) as progress:
        progress.advance()
        progress.advance(2)
    lines = capfd.readouterr().err.splitlines()
    assert [line.split("  ")[0] for line in lines] == ["sweep: 1/3 trials (33%)", "sweep: 3/3 trials (100%)"]
