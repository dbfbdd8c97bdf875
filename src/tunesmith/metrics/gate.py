"""Whether an evaluation passes its gate (``eval.gate``): each check against the numbers the evaluate stage wrote.

Pure: it reads ``metrics`` ({"base", "tuned"}), ``comparison`` (delta and CI per metric) and ``analysis``
(forgetting, bias flips, memorisation, factual drift) as the eval files hold them, and says for each check
whether it held, with the values it saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def check_gate(
    checks: Sequence[Any], metrics: dict[str, Any], comparison: dict[str, Any], analysis: dict[str, Any]
) -> list[dict[str, Any]]:
    """One ``{"check", "passed", "detail"}`` per check, in order."""
    return [{"check": c.describe(), **_check(c, metrics, comparison, analysis)} for c in checks]


def failed(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in results if not r["passed"]]


def gate_report(
    checks: Sequence[Any], metrics: dict[str, Any], comparison: dict[str, Any], analysis: dict[str, Any]
) -> dict[str, Any]:
    """``{"passed", "checks": [{"check", "passed", "detail"}]}``: what ``eval/gate.json`` holds."""
    results = check_gate(checks, metrics, comparison or {}, analysis)
    return {"passed": not failed(results), "checks": results}


def _check(check: Any, metrics: dict[str, Any], comparison: dict[str, Any], analysis: dict[str, Any]) -> dict:
    kind = check.check
    if kind == "delta":
        stats = comparison.get(check.metric)
        if stats is None:
            return _missing(f"no base-vs-tuned comparison of {check.metric!r}", sorted(comparison))
        sign = -1.0 if check.lower_is_better else 1.0
        gain = sign * stats["delta"]
        low = min(sign * stats["ci95"][0], sign * stats["ci95"][1])
        passed = gain >= check.min and (low > 0 or not check.ci_above_zero)
        return {"passed": passed, "detail": f"gain {gain:+.4f}, 95% CI low end {low:+.4f}"}
    if kind == "score":
        value = metrics.get("tuned", {}).get(check.metric)
        if value is None:
            return _missing(f"the tuned model has no {check.metric!r}", sorted(metrics.get("tuned", {})))
        passed = (check.min is None or value >= check.min) and (check.max is None or value <= check.max)
        return {"passed": passed, "detail": f"tuned {check.metric} {value:.4f}"}
    if kind == "forgetting":
        change = analysis.get("forgetting", {}).get("change_pct")
        if change is None:
            return _missing("no forgetting measurement (eval.forgetting and eval.baseline)", [])
        return {"passed": change <= check.max_pct, "detail": f"perplexity change {change:+.2f}%"}
    if kind in ("bias_flips", "memorisation"):
        key = "bias" if kind == "bias_flips" else "memorisation"
        field = "flip_rate" if kind == "bias_flips" else "rate"
        base = analysis.get("base", {}).get(key, {}).get(field)
        tuned = analysis.get("tuned", {}).get(key, {}).get(field)
        if base is None or tuned is None:
            return _missing(f"no {key} rates for both base and tuned model", [])
        passed = tuned <= base + check.tolerance
        detail = f"base {base:.1%}, tuned {tuned:.1%}"
        canaries = [analysis.get(m, {}).get(key, {}).get("canaries") for m in ("base", "tuned")]
        if kind == "memorisation" and all(canaries):
            passed = passed and canaries[1]["rate"] <= canaries[0]["rate"] + check.tolerance
            detail += f"; canaries extracted: base {canaries[0]['extracted']}, tuned {canaries[1]['extracted']}"
        return {"passed": passed, "detail": detail}
    if kind == "factual_drift":
        drift = analysis.get("factual_drift", {}).get("right_to_wrong_rate")
        if drift is None:
            return _missing("no factual-drift measurement (eval.factual_drift)", [])
        return {"passed": drift <= check.max, "detail": f"right to wrong {drift:.1%}"}
    raise ValueError(f"gate check {kind!r} is not known")


def _missing(what: str, available: list[str]) -> dict[str, Any]:
    have = f" (available: {', '.join(available)})" if available else ""
    return {"passed": False, "detail": f"not measured: {what}{have}"}
