"""The results of a sweep: one row per trial, written as ``results.json`` / ``results.csv`` and printed as a table."""

from __future__ import annotations

import csv
import io
from typing import Any

from rich.console import Console
from rich.table import Table

from tunesmith.core.fs import write_json, write_text
from tunesmith.sweep.load import Sweep
from tunesmith.sweep.space import format_value

out = Console(soft_wrap=True)


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """One row per trial of the study, whichever worker ran it."""
    trials = study.trials
    retried = {t.system_attrs["retry_history"][-1]: t.number for t in trials if t.system_attrs.get("retry_history")}
    rows = []
    for t in trials:
        duration = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else None
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name,
                "value": t.value,
                **{f"params.{k}": v for k, v in t.params.items()},
                "last_step": t.user_attrs.get("last_step"),
                "seconds": round(duration, 1) if duration is not None else None,
                "note": _note(t, retried),
                "worker": t.user_attrs.get("worker", ""),
                "run_dir": t.user_attrs.get("run_dir", ""),
            }
        )
    return rows


def _note(trial: Any, retried: dict[int, int]) -> str:
    """Why a trial failed, and which trials retry which (a retry copies the failed trial's values)."""
    notes = [trial.user_attrs.get("failure", "")]
    if trial.number in retried and trial.state.name == "FAIL" and not notes[0]:
        notes = ["its worker stopped (no heartbeat)"]
    if trial.number in retried:
        notes.append(f"retried as trial {retried[trial.number]}")
    if trial.system_attrs.get("retry_history"):
        notes.append(f"retry of trial {trial.system_attrs['retry_history'][-1]}")
    return "; ".join(n for n in notes if n)


def write_results(sweep: Sweep, study: Any) -> list[dict[str, Any]]:
    """results.json and results.csv: one row per trial (written after every trial, so a kill loses nothing)."""
    rows = trial_rows(study)
    write_json(sweep.dir / "results.json", rows)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    write_text(sweep.dir / "results.csv", buffer.getvalue())
    return rows


def print_results(sweep: Sweep, rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    table = Table(title=f"Sweep '{sweep.name}': {sweep.settings.metric} ({sweep.direction})")
    params = [k for k in dict.fromkeys(k for r in rows for k in r) if k.startswith("params.")]
    for column in ("trial", "state", sweep.settings.metric, *(p.removeprefix("params.") for p in params), "step", "s"):
        table.add_column(column, justify="right" if column not in ("state",) else "left")
    best = (summary.get("best") or {}).get("trial")
    for r in rows:
        cells = [
            str(r["trial"]) + (" *" if r["trial"] == best else ""),
            r["state"].lower(),
            "-" if r["value"] is None else f"{r['value']:.4f}",
            *(format_value(r.get(p)) for p in params),
            "-" if r["last_step"] is None else str(r["last_step"]),
            "-" if r["seconds"] is None else f"{r['seconds']:.0f}",
        ]
        table.add_row(*cells)
    out.print(table)
    if summary.get("best"):
        b = summary["best"]
        out.print(f"best: trial {b['trial']} ({sweep.settings.metric} {b['value']:.4f}); config {b['config']}")
        out.print(
            f"      model {b['model']}"
            + ("; other trials' model folders were deleted" if sweep.settings.keep_models == "best" else "")
        )
    out.print(f"report: {summary['report']}")
