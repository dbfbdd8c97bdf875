"""``report.html``: one self-contained page about a run that opens offline (inline SVG charts, no scripts)."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader

from tunesmith.core.environment import summary
from tunesmith.core.fs import read_jsonl_log, write_text
from tunesmith.core.rundir import RunDir

SAMPLE_ROWS = 20


def write_report(run_dir: RunDir) -> Path:
    """Render ``report.html`` from what a run directory holds; sections without data are left out."""
    env = Environment(loader=PackageLoader("tunesmith.pipeline", "templates"), autoescape=True)
    state = run_dir.read_state()["stages"]
    steps = read_jsonl_log(run_dir.metrics)
    context = {
        "name": run_dir.root.name,
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "config_yaml": run_dir.config.read_text(encoding="utf-8") if run_dir.config.is_file() else "",
        "config": _yaml(run_dir.config),
        "stages": state,
        "data_report": _json(run_dir.data / "report.json"),
        "audit": _json(run_dir.data / "audit.json"),
        "train_tokens": _json(run_dir.data / "train_tokens.json"),  # tokens per epoch after truncation (train stage)
        "metrics": _json(run_dir.eval / "metrics.json"),
        "comparison": _json(run_dir.eval / "comparison.json"),
        "baselines": _json(run_dir.eval / "baselines.json"),
        "analysis": _json(run_dir.eval / "analysis.json"),
        "gate": _json(run_dir.eval / "gate.json"),
        "prompt_variants": _json(run_dir.eval / "prompt_variants.json"),
        "forgetting_earlier": _json(run_dir.eval / "forgetting_earlier.json"),
        "environment": summary(_json(run_dir.environment)) if run_dir.environment.is_file() else None,
        "samples": read_jsonl_log(run_dir.eval / "predictions.jsonl")[:SAMPLE_ROWS],
        "loss_chart": _curve_svg(steps, ["loss", "val_loss"], "loss") if steps else None,
        "lr_chart": _curve_svg(steps, ["lr"], "learning rate") if steps else None,
        "rl_chart": _curve_svg(steps, ["reward", "kl"], "reward / KL") if any("reward" in r for r in steps) else None,
    }
    path = run_dir.root / "report.html"
    write_text(path, env.get_template("report.html.j2").render(**context))
    return path


def _curve_svg(rows: list[dict[str, Any]], keys: list[str], ylabel: str) -> str:
    """A small line chart as inline SVG (matplotlib, no fonts or scripts fetched)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 2.6), dpi=100)
    for key in keys:
        points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        if points:
            axes.plot(*zip(*points, strict=True), marker="o" if len(points) < 30 else None, markersize=3, label=key)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    if len(keys) > 1:
        axes.legend()
    figure.tight_layout()
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    plt.close(figure)
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :]  # drop the XML prolog so it can sit inside HTML


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _yaml(path: Path) -> Any:
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else {}
