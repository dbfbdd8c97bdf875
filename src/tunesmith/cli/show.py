"""What the CLI prints about an evaluation: metric tables, base vs tuned with intervals, probes and the gate."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

out = Console(width=None if sys.stdout.isatty() else 160)  # logs and pipes get the whole table


def print_table(title: str, columns: dict[str, dict[str, float]]) -> None:
    """Metrics (rows) of several models (columns)."""
    table = Table(title=title)
    table.add_column("metric")
    for name in columns:
        table.add_column(name, justify="right")
    for metric in next(iter(columns.values())):
        table.add_row(metric, *(f"{c[metric]:.4f}" if metric in c else "-" for c in columns.values()))
    out.print(table)


def print_evaluation(eval_dir: Path) -> None:
    """Base vs tuned table (delta, 95% CI, p-value, other baselines), then forgetting and bias lines."""

    def load(name: str) -> dict[str, Any]:
        path = eval_dir / name
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    metrics, comparison, baselines, analysis = (
        load(n) for n in ("metrics.json", "comparison.json", "baselines.json", "analysis.json")
    )
    table = Table(title="Evaluation on the test split")
    columns = {**{k: v for k, v in metrics.items() if k == "base"}, **baselines, "tuned": metrics["tuned"]}
    table.add_column("metric")
    for name in columns:
        table.add_column(name.replace("_", " "), justify="right")
    if comparison:
        against = str(analysis.get("compared_with") or "base").replace("_", " ")  # a fresh head: a baseline
        for header in (f"tuned - {against}", "95% CI", "p"):
            table.add_column(header, justify="right")
    for metric in metrics["tuned"]:
        cells = [f"{values[metric]:.4f}" if metric in values else "-" for values in columns.values()]
        if comparison and metric in comparison:
            stats = comparison[metric]
            low, high = stats["ci95"]
            cells += [f"{stats['delta']:+.4f}", f"[{low:+.3f}, {high:+.3f}]", f"{stats['p_value']:.3g}"]
        table.add_row(metric, *cells)
    out.print(table)
    constrained = comparison.get("accuracy_vs_base_constrained")
    if constrained:
        low, high = constrained["ci95"]
        out.print(
            f"tuned accuracy - base constrained to the labels: {constrained['delta']:+.4f} "
            f"[{low:+.3f}, {high:+.3f}], McNemar p = {constrained['p_value']:.3g}"
        )
    forgetting = analysis.get("forgetting", {})
    if "change_pct" in forgetting:
        out.print(
            f"forgetting: perplexity on general chat {forgetting['base_perplexity']:.2f} -> "
            f"{forgetting['tuned_perplexity']:.2f} ({forgetting['change_pct']:+.1f}%)"
        )
    bias = {name: analysis[name]["bias"] for name in ("base", "tuned") if "bias" in analysis.get(name, {})}
    if bias:
        rates = ", ".join(f"{name} {b['flip_rate']:.1%}" for name, b in bias.items())
        rows = next(iter(bias.values()))["rows_probed"]
        out.print(f"bias probe: answers that flip when identity terms are swapped ({rows} rows): {rates}")
    print_probes(analysis)
    gate = load("gate.json")
    if gate:
        verdict = "[green]passed[/]" if gate["passed"] else "[bold red]FAILED[/] (export and serve refuse this run)"
        out.print(f"gate: {verdict}")
        for check in gate["checks"]:
            mark = "ok  " if check["passed"] else "FAIL"
            out.print(f"  {mark} {escape(check['check'])}: {escape(check['detail'])}", highlight=False)


def print_probes(analysis: dict[str, Any]) -> None:
    """Memorisation and factual-drift lines, when those probes ran."""
    models = [m for m in ("base", "tuned") if "memorisation" in analysis.get(m, {})]
    if models:
        probes = {m: analysis[m]["memorisation"] for m in models}
        rates = ", ".join(f"{m} {p['rate']:.1%}" for m, p in probes.items())
        rows = probes[models[-1]]["rows"]
        out.print(f"memorisation: training rows continued (near-)verbatim from their first half ({rows} rows): {rates}")
        canaries = {m: p["canaries"] for m, p in probes.items() if p.get("canaries")}
        if canaries:
            found = ", ".join(f"{m} {c['extracted']}/{c['planted']}" for m, c in canaries.items())
            out.print(f"canaries extracted: {found}")
    drift = analysis.get("factual_drift")
    if drift:
        out.print(
            f"factual drift: {drift['base_accuracy']:.1%} -> {drift['tuned_accuracy']:.1%} right on "
            f"{drift['questions']} general-knowledge questions; right to wrong {drift['right_to_wrong']} "
            f"({drift['right_to_wrong_rate']:.1%} of those the base model got right)"
        )
