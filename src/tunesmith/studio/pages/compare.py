"""Compare: two or more runs side by side: each metric of the tuned models with its change from the base model and
that change's 95% interval, the settings in which their configs differ, and their loss curves overlaid."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from tunesmith.core.errors import TunesmithError
from tunesmith.studio.context import Studio, studio
from tunesmith.studio.layout import render
from tunesmith.studio.live import point
from tunesmith.studio.pages import Page
from tunesmith.studio.runs import find_run, metrics_rows

router = APIRouter()
MAX_RUNS = 8
MAX_POINTS = 500  # per curve: long runs are thinned, every k-th point (the last one kept)
IGNORED = ("output.",)  # where a run is written, not how


@router.get("/compare", response_class=HTMLResponse, include_in_schema=False)
def page(request: Request) -> str:
    return render(request, "compare.html.j2", active="compare")


@router.get("/api/compare")
def compare(keys: list[str] = Query(default=[]), ts: Studio = Depends(studio)) -> dict[str, Any]:
    if not 2 <= len(keys) <= MAX_RUNS:
        raise TunesmithError(f"choose 2 to {MAX_RUNS} runs to compare (got {len(keys)})")
    views = [find_run(ts, key) for key in keys]
    runs = []
    for view in views:
        folder = view.dir
        runs.append(
            view.summary()
            | {
                "metrics": _json(folder / "eval" / "metrics.json") if folder else None,
                "comparison": _json(folder / "eval" / "comparison.json") if folder else None,
                "curve": _thin([point(r) for r in metrics_rows(folder)]),
            }
        )
    return {"runs": runs, "metrics": _metric_rows(runs), "config_diff": config_diff([v.config for v in views])}


def _metric_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per metric: each run's base and tuned value, the delta and its interval (None where a run lacks it)."""
    names: dict[str, None] = {}
    for run in runs:
        for name in (run["metrics"] or {}).get("tuned") or {}:
            names[name] = None
    out = []
    for name in names:
        cells = []
        for run in runs:
            metrics, comparison = run["metrics"] or {}, (run["comparison"] or {}).get(name) or {}
            cells.append({
                "base": (metrics.get("base") or {}).get(name),
                "tuned": (metrics.get("tuned") or {}).get(name),
                "delta": comparison.get("delta"),
                "ci95": comparison.get("ci95"),
                "p_value": comparison.get("p_value"),
            })  # fmt: skip
        out.append({"metric": name, "runs": cells})
    return out


def config_diff(configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The dotted keys whose values differ between the configs (a key one config lacks counts as a difference)."""
    flat = [_flatten(c) for c in configs]
    keys = sorted({k for f in flat for k in f if not k.startswith(IGNORED)})
    missing = object()
    out = []
    for key in keys:
        values = [f.get(key, missing) for f in flat]
        if any(v != values[0] for v in values):
            out.append({"key": key, "values": [None if v is missing else v for v in values]})
    return out


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out |= _flatten(value, f"{prefix}.{key}" if prefix else str(key))
        return out
    return {prefix: node}


def _thin(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if len(points) <= MAX_POINTS:
        return points
    every = -(-len(points) // MAX_POINTS)
    return [p for i, p in enumerate(points) if i % every == 0 or i == len(points) - 1]


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


PAGE = Page("compare", "Compare", router)
