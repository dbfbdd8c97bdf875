"""The README's quickstart table, from real runs: `tunesmith run examples/quickstart.yaml` once per seed.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/quickstart_seeds.py [--seeds 0 1 2] [--set KEY=VALUE ...] [--readme]

Each seed (``training.seed``: which training rows are sampled, the adapter's initialisation, the batch order and
the few-shot examples) is a full run of the real CLI in a temporary folder, timed from the command line. The
result file (``bench/results/quickstart_seeds.json``) holds every seed's figures, their mean and standard
deviation, the command and the environment (tunesmith.core.environment) it ran in; ``--readme`` also rewrites the
table between the README's quickstart markers. A test checks that the README table is this file's rendering.

Heavy (about 6 minutes a seed on 2 cores): run it alone, e.g. under ``flock /tmp/tunesmith-heavy.lock``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "examples" / "quickstart.yaml"
RESULTS = REPO / "bench" / "results" / "quickstart_seeds.json"
README = REPO / "README.md"
BEGIN, END = "<!-- quickstart-table:begin (bench/quickstart_seeds.py --readme) -->", "<!-- quickstart-table:end -->"
# (metric key in metrics.json, label in the table)
ROWS = (
    ("accuracy", "accuracy"),
    ("macro_f1", "macro-F1"),
    ("invalid_rate", "answers naming no label"),
    ("roc_auc", "ROC-AUC (label probabilities)"),
    ("ece", "calibration error (ECE)"),
)
CONSTRAINED = "accuracy_vs_base_constrained"
SEEDS = [42, 43, 44]  # 42 is the quickstart's own training.seed: `make quickstart` reproduces the first run


def run_seed(seed: int, overrides: list[str], folder: Path) -> dict[str, Any]:
    """One quickstart run with ``training.seed = seed``; its figures as the results file keeps them."""
    exe = Path(sys.executable).with_name("tunesmith")
    command = [
        str(exe),
        "run",
        str(CONFIG),
        "--force",
        "--set",
        f"training.seed={seed}",
        "--set",
        f"output.dir={folder}",
        *[a for o in overrides for a in ("--set", o)],
    ]
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"seed {seed} failed:\n{done.stderr[-3000:]}")
    run = folder / "quickstart"

    def load(name: str) -> Any:
        return json.loads((run / name).read_text())

    metrics, baselines = load("eval/metrics.json"), load("eval/baselines.json")
    comparison = load("eval/comparison.json")
    analysis, state = load("eval/analysis.json"), load("state.json")["stages"]
    few_shot = next(k for k in baselines if k.endswith("_shot"))
    precision = (load("environment.json").get("precision") or {}).get("name", "fp32")
    return {
        "seed": seed,
        "base": metrics["base"],
        "base_k_shot": baselines[few_shot],
        "majority_class": baselines["majority_class"],
        "tuned": metrics["tuned"],
        "comparison": comparison,
        "forgetting": analysis.get("forgetting"),
        "bias": {name: analysis[name]["bias"]["flip_rate"] for name in ("base", "tuned") if "bias" in analysis[name]},
        "bias_rows": analysis["tuned"].get("bias", {}).get("rows_probed"),
        "train": {
            "steps": state["train"]["steps"],
            "seconds": state["train"]["seconds"],
            "tokens": state["train"]["tokens"],
        },
        "test_rows": state["evaluate"]["rows"],
        "wall_s": round(wall, 1),
        "precision": precision,
        # the higher of the 1-minute load at start and end: other work stretches wall_s, never the figures
        "load_avg_1min": round(max(load_before, os.getloadavg()[0]), 2),
    }


def spread(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def summarise(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean, sd, min and max over seeds of every figure in the table."""
    summary: dict[str, Any] = {}
    for column in ("base", "base_k_shot", "majority_class", "tuned"):
        summary[column] = {
            key: spread([s[column][key] for s in seeds]) for key, _ in ROWS if all(key in s[column] for s in seeds)
        }
    summary["delta"] = {
        key: spread([s["comparison"][key]["delta"] for s in seeds])
        for key, _ in ROWS
        if all(key in s["comparison"] for s in seeds)
    }
    summary[CONSTRAINED] = spread([s["comparison"][CONSTRAINED]["delta"] for s in seeds])
    summary["base"]["constrained_accuracy"] = spread([s["base"]["constrained_accuracy"] for s in seeds])
    summary["forgetting_pct"] = spread([s["forgetting"]["change_pct"] for s in seeds])
    summary["bias"] = {name: spread([s["bias"][name] for s in seeds]) for name in ("base", "tuned")}
    summary["wall_s"] = spread([s["wall_s"] for s in seeds])
    summary["train_s"] = spread([s["train"]["seconds"] for s in seeds])
    return summary


def _ms(stat: dict[str, float] | None, signed: bool = False, pct: bool = False) -> str:
    if stat is None:
        return "-"
    scale, unit = (100, "%") if pct else (1, "")
    mean = f"{stat['mean'] * scale:+.3f}" if signed else f"{stat['mean'] * scale:.3f}"
    if pct:
        mean = f"{stat['mean'] * scale:.1f}"
    sd = f"{stat['sd'] * scale:.1f}" if pct else f"{stat['sd'] * scale:.3f}"
    return f"{mean}{unit} ± {sd}{unit}"


def _load(seeds: list[dict[str, Any]]) -> str:
    loads = [s["load_avg_1min"] for s in seeds if "load_avg_1min" in s]
    return f"{min(loads):.1f}-{max(loads):.1f}" if loads else "not recorded"


def render(results: dict[str, Any]) -> str:
    """The README's table and the lines under it, from a results file."""
    seeds, summary = results["seeds"], results["summary"]
    names = ", ".join(str(s["seed"]) for s in seeds)
    k = seeds[0]["comparison"]
    lines = [
        f"Seeds {names} (`training.seed`): mean ± sd over the {len(seeds)} runs, {seeds[0]['test_rows']} SST-2 dev "
        f"rows each; each seed's tuned - base with its own 95% bootstrap interval and McNemar's p in the last column.",
        "",
        "| metric | base zero-shot | base 3-shot | majority class | tuned (LoRA) | tuned - base | per seed [95% CI] |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, label in ROWS:
        pct = key == "invalid_rate"
        per_seed = (
            "; ".join(
                f"{s['comparison'][key]['delta']:+.3f} [{s['comparison'][key]['ci95'][0]:+.3f}, "
                f"{s['comparison'][key]['ci95'][1]:+.3f}]"
                + (f" p={s['comparison'][key]['p_value']:.2g}" if s["comparison"][key]["test"] == "mcnemar" else "")
                for s in seeds
            )
            if key in k
            else "-"
        )
        tuned = _ms(summary["tuned"].get(key), pct=pct)
        lines.append(
            f"| {label} | {_ms(summary['base'].get(key), pct=pct)} | {_ms(summary['base_k_shot'].get(key), pct=pct)} "
            f"| {_ms(summary['majority_class'].get(key), pct=pct) if key in ('accuracy', 'macro_f1') else '-'} "
            f"| **{tuned}** | {_ms(summary['delta'].get(key), signed=True, pct=pct)} | {per_seed} |"
        )
    constrained = "; ".join(
        f"{s['comparison'][CONSTRAINED]['delta']:+.3f} [{s['comparison'][CONSTRAINED]['ci95'][0]:+.3f}, "
        f"{s['comparison'][CONSTRAINED]['ci95'][1]:+.3f}] p={s['comparison'][CONSTRAINED]['p_value']:.2g}"
        for s in seeds
    )
    base_constrained = _ms(summary["base"].get("constrained_accuracy"))
    forgetting = summary["forgetting_pct"]
    env = results["environment"]
    lines += [
        "",
        f"Against the base model constrained to the two labels (accuracy {base_constrained}: the label its "
        f"probabilities rank first, so answer format cannot count), the tuned model gains "
        f"{_ms(summary[CONSTRAINED], signed=True)}; per seed {constrained}.",
        f"Forgetting: perplexity on held-out general chat {forgetting['mean']:+.1f}% ± {forgetting['sd']:.1f}%. "
        f"Bias probe: answers that change when gendered or identity terms are swapped, "
        f"{_ms(summary['bias']['base'], pct=True)} (base) → {_ms(summary['bias']['tuned'], pct=True)} (tuned) of "
        f"{seeds[0]['bias_rows']} rows.",
        "",
        f"Measured on {results['date']} with `{results['command']}`: {env['cpu']['model']} "
        f"({env['cpu']['logical_cpus']} CPUs, {', '.join(env['cpu']['flags'] or []) or 'no AVX2'}), "
        f"{'/'.join(sorted({str(s.get('precision', 'fp32')) for s in seeds}))}, "
        f"torch {env['packages']['torch']}, transformers {env['packages']['transformers']}, peft "
        f"{env['packages']['peft']}, tunesmith {env['tunesmith']['git_commit'] or env['tunesmith']['version']}. "
        f"Wall time per run (from `tunesmith run`, model already converted) {summary['wall_s']['mean'] / 60:.1f} min "
        f"± {summary['wall_s']['sd']:.0f} s, of which training {summary['train_s']['mean']:.0f} s "
        f"({seeds[0]['train']['steps']} steps; load average {_load(seeds)} while it ran).",
    ]
    return "\n".join(lines)


def update_readme(text: str) -> None:
    readme = README.read_text()
    start, end = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    README.write_text(readme[:start] + "\n" + text + "\n" + readme[end:])


def readme_table() -> str:
    """What the README holds between the markers (for the test that compares it with the results file)."""
    readme = README.read_text()
    return readme[readme.index(BEGIN) + len(BEGIN) : readme.index(END)].strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=SEEDS)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="a config override per run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--readme", action="store_true", help="rewrite the README's quickstart table")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    from tunesmith.core.environment import collect

    seeds = []
    with tempfile.TemporaryDirectory(prefix="quickstart-seeds-") as tmp:
        for seed in args.seeds:
            seeds.append(run_seed(seed, args.overrides, Path(tmp) / f"seed{seed}"))
            s = seeds[-1]
            print(
                f"seed {seed}: base {s['base']['accuracy']:.3f} tuned {s['tuned']['accuracy']:.3f} "
                f"(constrained base {s['base'].get('constrained_accuracy', float('nan')):.3f}, "
                f"p {s['comparison'][CONSTRAINED]['p_value']:.2g}) {s['wall_s']:.0f} s",
                flush=True,
            )
    command = "python bench/quickstart_seeds.py" + "".join(
        f" --seeds {' '.join(map(str, args.seeds))}" if args.seeds != SEEDS else ""
    )
    command += "".join(f" --set {o}" for o in args.overrides)
    results = {
        "date": date.today().isoformat(),
        "command": command,
        "config": str(CONFIG.relative_to(REPO)),
        "environment": collect({}),  # the seeds are per run, in "seeds"
        "seeds": seeds,
        "summary": summarise(seeds),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    text = render(results)
    print("\n" + text)
    if args.readme:
        update_readme(text)


if __name__ == "__main__":
    main()
