"""The HTML report of a sweep (``report.html``, from ``templates/sweep.html.j2``): results table, optimisation
history and parameter importance as inline SVG, best config.
"""

from __future__ import annotations

import io
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tunesmith.core.fs import write_text
from tunesmith.sweep.load import Sweep


def write_sweep_report(sweep: Sweep, study: Any, rows: list[dict[str, Any]], summary: dict[str, Any]) -> Path:
    """``report.html``: results table, optimisation history and parameter importance (inline SVG), best config."""
    from jinja2 import Environment, PackageLoader

    history, importance, note = _plots(study)
    env = Environment(loader=PackageLoader("tunesmith.sweep", "templates"), autoescape=True)
    best_yaml = sweep.dir / "best.yaml"
    html = env.get_template("sweep.html.j2").render(
        name=sweep.name,
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        summary=summary,
        rows=rows,
        params=[k for k in dict.fromkeys(k for r in rows for k in r) if k.startswith("params.")],
        space=sweep.settings.space,
        workers=sorted({r["worker"] for r in rows if r.get("worker")}),
        history=history,
        importance=importance,
        importance_note=note,
        best_yaml=best_yaml.read_text(encoding="utf-8") if best_yaml.is_file() else None,
    )
    path = sweep.dir / "report.html"
    write_text(path, html)
    return path


def _plots(study: Any) -> tuple[str | None, str | None, str | None]:
    """Optuna's own matplotlib plots as inline SVG; importance needs >= 2 finished trials that vary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return None, None, "no trial completed yet"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna marks its matplotlib plots experimental
        history = _svg(ovm.plot_optimization_history(study), plt)
        importance, note = None, None
        try:
            importance = _svg(ovm.plot_param_importances(study), plt)
        except (RuntimeError, ValueError) as exc:
            note = f"parameter importance not available: {exc}"
    return history, importance, note


def _svg(axes: Any, plt: Any) -> str:
    figure = axes.figure
    figure.set_size_inches(6.5, 3.2)
    figure.tight_layout()
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    plt.close(figure)
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :]
