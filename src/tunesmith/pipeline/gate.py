"""The evaluation gate of a run (``eval.gate``): computed when the run is evaluated (``eval/gate.json``) and again
from its eval files whenever ``export`` or ``serve`` is asked to ship it, which they refuse while it fails."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunesmith.core.config import RunConfig
from tunesmith.core.errors import TunesmithError
from tunesmith.metrics.gate import gate_report as report_of
from tunesmith.pipeline.trained import TrainedRun


class GateFailed(TunesmithError):
    """The run's evaluation does not meet its gate."""


def gate_report(cfg: RunConfig, metrics: dict[str, Any], comparison: dict[str, Any], analysis: dict[str, Any]) -> dict:
    """``{"passed", "checks": [{"check", "passed", "detail"}]}`` of the config's gate on these numbers."""
    return report_of(cfg.eval.gate, metrics, comparison, analysis)


def run_gate(run: TrainedRun) -> dict[str, Any] | None:
    """The gate of a trained run from its eval files; None when the run has no gate."""
    if not run.config.eval.gate:
        return None
    folder = run.dir.eval
    if not (folder / "metrics.json").is_file():
        check = {"check": "the run is evaluated", "passed": False, "detail": f"no {folder / 'metrics.json'}"}
        return {"passed": False, "checks": [check]}
    read = [_json(folder / name) for name in ("metrics.json", "comparison.json", "analysis.json")]
    return gate_report(run.config, *read)


def require_gate(run: TrainedRun, force: bool, action: str) -> dict[str, Any] | None:
    """The gate's report; GateFailed naming each failed check unless ``force``."""
    report = run_gate(run)
    if report is None or report["passed"] or force:
        return report
    lines = "\n".join(f"  - {c['check']}: {c['detail']}" for c in report["checks"] if not c["passed"])
    raise GateFailed(
        f"{run.dir.root}: the evaluation gate (eval.gate) failed, so tunesmith will not {action} this run:\n{lines}\n"
        f"  fix: improve the run and evaluate it again, or pass --force to {action} it anyway (an export's model "
        "card then says so)"
    )


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
