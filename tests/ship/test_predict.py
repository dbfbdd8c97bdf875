"""`tunesmith predict`: batched predictions over a file, killed mid-way and resumed, each row exactly once."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers.cli import run_cli
from tests.helpers.paths import SST2


def _write_input(path: Path, rows: int) -> list[dict[str, str]]:
    """The first ``rows`` SST-2 dev rows as CSV (sentence, label); the run's prompt template uses `sentence`."""
    lines = (SST2 / "dev.tsv").read_text(encoding="utf-8").splitlines()[1 : rows + 1]
    records = [dict(zip(("sentence", "label"), line.split("\t"), strict=True)) for line in lines]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["sentence", "label"])
        writer.writeheader()
        writer.writerows(records)
    return records


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_predict_killed_and_resumed_writes_every_row_once(tuned_run_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "rows.csv"
    records = _write_input(source, 300)
    out = tmp_path / "predictions.jsonl"
    exe = Path(sys.executable).with_name("tunesmith")
    command = [str(exe), "predict", str(tuned_run_dir), "--input", str(source), "--output", str(out)]
    process = subprocess.Popen([*command, "--batch-size", "1"], stderr=subprocess.PIPE, env={**os.environ})
    deadline = time.monotonic() + 180
    while not (out.is_file() and out.read_bytes().count(b"\n") >= 10):
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()
    written = out.read_bytes().count(b"\n")
    assert 10 <= written < 300  # interrupted part-way
    with out.open("ab") as handle:
        handle.write(b'{"row": 9999, "inp')  # a line torn by the kill: must be dropped, not kept or duplicated

    resumed = run_cli("predict", str(tuned_run_dir), "--input", str(source), "--output", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert f"{300 - written} rows written, {written} already done" in resumed.stderr
    lines = _lines(out)
    rows = [line["row"] for line in lines]
    assert sorted(rows) == list(range(2, 302))  # CSV line numbers: each data row exactly once
    by_row = {line["row"]: line for line in lines}
    assert all(by_row[i + 2]["input"] == record for i, record in enumerate(records))
    assert {line["prediction"] for line in lines} <= {"positive", "negative"}

    # The same prompts as the run's evaluation: the tuned predictions there agree row for row.
    evaluated = [json.loads(x) for x in (tuned_run_dir / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert [by_row[i + 2]["prediction"] for i in range(len(evaluated))] == [e["tuned"] for e in evaluated]

    again = run_cli("predict", str(tuned_run_dir), "--input", str(source), "--output", str(out))
    assert again.returncode == 0 and "nothing to do" in again.stderr
    assert len(_lines(out)) == 300


def test_rows_without_a_prompt_are_reported_once(tuned_run_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "rows.jsonl"
    source.write_text(
        json.dumps({"sentence": "a gorgeous , witty movie ."}) + "\n" + json.dumps({"text": "no sentence"}) + "\n"
    )
    out = tmp_path / "out.jsonl"
    result = run_cli("predict", str(tuned_run_dir), "--input", str(source), "--output", str(out), "--batch-size", "4")
    assert result.returncode == 0, result.stderr
    first, second = _lines(out)
    assert first["row"] == 1 and first["prediction"] in ("positive", "negative")
    assert second["row"] == 2 and second["prediction"] is None and "sentence" in second["error"]

    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"sentence": "something else"}) + "\n")
    mismatch = run_cli("predict", str(tuned_run_dir), "--input", str(other), "--output", str(out))
    assert mismatch.returncode == 2 and "another input file" in mismatch.stderr and "Traceback" not in mismatch.stderr
