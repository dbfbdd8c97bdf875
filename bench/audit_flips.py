"""Planted label flips: how many of them `tunesmith data audit` ranks first, per scorer.

    HF_HUB_OFFLINE=1 nice .venv/bin/python bench/audit_flips.py [--scorers embeddings finetune run] [--seeds 0 1]
        [--run runs/NAME [runs/OTHER ...]] [--rows N] [--folds K] [--epochs E]

SST-2's dev set (examples/data/sst2/dev.tsv, 872 rows), 5% of its labels flipped (seeded: 43 rows), audited as
`tunesmith data audit` does (the same ``audit_file``) with each scorer:

- ``embeddings``: frozen minilm-l6 embeddings + logistic regression, k-fold;
- ``finetune``: minilm-l6 with a classification head fine-tuned per fold (``--scorer finetune``);
- ``run``: a trained run's model (``--run``: a classify run, or an sft run answering with label words; several runs:
  their probabilities averaged, as `data audit --run A --run B --no-stack` does); without
  ``--run`` the bench first trains one with ``--run-config`` (default examples/quickstart.yaml: SmolLM2-135M, LoRA,
  480 SST-2 *training* rows, so the dev rows are held out) and times that apart. Its probabilities depend only on
  the texts, so they are computed once and reused for every seed (``probabilities_cached`` on later seeds);
- ``run-stacked``: the same runs' probabilities refit k-fold on the audited (noisy) labels with the frozen
  embeddings, as `data audit --run` does by default (``stacked_scorer``; ``--no-stack`` gives ``run``).

Reported per scorer and seed: recall of the flipped rows among the audit's top k suggestions (k = the number of
flipped rows) and top 2k, the scorer's accuracy against the labels it was given (flips included), how many rows it
flags, and wall/CPU seconds; the recall at k under each cleanlab ranking (``recall_at_k_by_ranking``:
self_confidence, the audit's, against normalized_margin and confidence_weighted_entropy, from the same
probabilities); then the same for the mean of the scorers' probabilities (``mean``), to see whether they err on
different rows. Results are appended to bench/results/audit_flips.jsonl with date, command and machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
DEV = REPO / "examples" / "data" / "sst2" / "dev.tsv"
EXAMPLE = REPO / "examples" / "quickstart.yaml"
RANKINGS = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")
RESULTS = REPO / "bench" / "results" / "audit_flips.jsonl"


def planted(rows: int | None, fraction: float, seed: int) -> tuple[list[str], list[str], list[int]]:
    """SST-2 dev texts, their labels with ``fraction`` flipped (seeded), and the flipped rows."""
    lines = DEV.read_text(encoding="utf-8").splitlines()[1:]
    lines = lines[:rows] if rows else lines
    texts = [line.rsplit("\t", 1)[0].strip() for line in lines]
    noisy = [line.rsplit("\t", 1)[1].strip() for line in lines]
    flipped = sorted(random.Random(seed).sample(range(len(noisy)), int(fraction * len(noisy))))
    for i in flipped:
        noisy[i] = "1" if noisy[i] == "0" else "0"
    return texts, noisy, flipped


def recall(ranked: list[int], flipped: list[int]) -> dict[str, float]:
    k = len(flipped)
    hits = {name: len(set(ranked[:n]) & set(flipped)) / k for name, n in (("at_k", k), ("at_2k", 2 * k))}
    return {f"recall_{name}": round(value, 3) for name, value in hits.items()}


def train_run(folder: Path, example: Path) -> tuple[Path, float]:
    """``example`` (SST-2 training rows only) run to the end in ``folder``: its directory, seconds. Its own
    evaluation is cut to 40 dev rows: the audit scores all of them anyway."""
    from tunesmith.core.config import validate_config
    from tunesmith.pipeline.run import Run

    config = yaml.safe_load(example.read_text(encoding="utf-8"))
    for key in ("train", "test"):
        config["data"][key] = str((example.parent / config["data"][key]).resolve())
    config["data"]["test_rows"] = 40
    config["output"] = {"dir": str(folder), "name": f"audit-{example.stem}"}
    run = Run(validate_config(config, source="audit-flips"))
    started = time.perf_counter()
    run.run(force=True)
    return run.dir.root, time.perf_counter() - started


_RUN_SCORERS: dict[Path, Any] = {}  # run directory -> its scorer


def make_scorer(name: str, args: argparse.Namespace, embeddings: np.ndarray) -> Any:
    from tunesmith.curate.audit_scorers import (
        FineTune,
        averaged_scorer,
        embedding_scorer,
        finetune_scorer,
        stacked_scorer,
    )
    from tunesmith.pipeline.audit_run import run_scorer

    if name == "embeddings":
        return embedding_scorer(embeddings)
    if name == "finetune":
        tune = {k: v for k, v in (("epochs", args.epochs), ("learning_rate", args.learning_rate)) if v is not None}
        return finetune_scorer(replace(FineTune(), **tune))
    for path in args.run:  # one scorer per run: it keeps its probabilities for the next seed
        if path not in _RUN_SCORERS:
            _RUN_SCORERS[path] = run_scorer(path)
    runs = [_RUN_SCORERS[path] for path in args.run]
    if name == "run-stacked":  # as audit_file(stack=True) wraps them, built here so the bench sees the result
        return stacked_scorer(runs, embeddings)
    return runs[0] if len(runs) == 1 else averaged_scorer(runs)


def by_ranking(y: np.ndarray, probs: np.ndarray, flipped: list[int]) -> dict[str, float]:
    """Recall at k of each cleanlab ranking, from the same probabilities."""
    from cleanlab.filter import find_label_issues

    out = {}
    for method in RANKINGS:
        ranked = [int(i) for i in find_label_issues(y, probs, return_indices_ranked_by=method)]
        out[method] = recall(ranked, flipped)["recall_at_k"]
    return out


_SCORED: set[tuple[Path, ...]] = set()  # runs whose probabilities the run scorer already holds


def clean_accuracy(probs: np.ndarray, y: np.ndarray, flipped: list[int]) -> float:
    """Accuracy against the true labels (the planted flips undone)."""
    truth = y.copy()
    truth[flipped] = 1 - truth[flipped]
    return round(float((probs.argmax(1) == truth).mean()), 4)


def capture(scorer: Callable[..., Any], store: list[np.ndarray]) -> Callable[..., Any]:
    """The scorer, keeping a copy of its probabilities (for the ``mean`` row)."""

    def score(*args: Any) -> Any:
        scores = scorer(*args)
        store.append(scores.probs)
        return scores

    return score


def measure(args: argparse.Namespace, seed: int) -> list[dict[str, Any]]:
    from cleanlab.filter import find_label_issues

    from tunesmith.curate.audit import audit_file
    from tunesmith.models.embed import embed_texts

    texts, noisy, flipped = planted(args.rows, 0.05, seed)
    embeddings = embed_texts(texts, "minilm-l6")
    classes = sorted(set(noisy))
    y = np.array([classes.index(label) for label in noisy])
    results, kept = [], []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "sst2-dev-flipped.jsonl"
        path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(texts, noisy, strict=True)))
        for name in args.scorers:
            store: list[np.ndarray] = []
            scorer = capture(make_scorer(name, args, embeddings), store)
            wall, cpu = time.perf_counter(), time.process_time()
            report = audit_file(path, folds=args.folds, seed=seed, scorer=scorer)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            issues = report["label_issues"]
            kept += store
            cached = name.startswith("run") and tuple(args.run) in _SCORED
            if name.startswith("run"):
                _SCORED.add(tuple(args.run))
            results.append(
                {
                    "scorer": name,
                    "seed": seed,
                    "rows": len(texts),
                    "flipped": len(flipped),
                    **recall(issues["ranked_indices"], flipped),
                    "flagged": issues["count"],
                    "recall_at_k_by_ranking": by_ranking(y, store[0], flipped),
                    "accuracy": issues["oof_accuracy"],  # against the labels given, flips included
                    "clean_accuracy": clean_accuracy(store[0], y, flipped),  # against the true labels
                    "out_of_fold": issues["out_of_fold"],
                    "scorer_model": issues["scorer_model"],
                    "method": issues["method"],
                    **({"probabilities_cached": True} if cached else {}),
                    "wall_s": round(wall, 1),
                    "cpu_s": round(cpu, 1),
                }
            )
            print(json.dumps(results[-1]), flush=True)
    if len(kept) > 1:
        probs = np.mean(kept, axis=0)
        ranked = [int(i) for i in find_label_issues(y, probs, return_indices_ranked_by="self_confidence")]
        results.append(
            {
                "scorer": "mean(" + "+".join(args.scorers) + ")",
                "seed": seed,
                "flipped": len(flipped),
                **recall(ranked, flipped),
                "recall_at_k_by_ranking": by_ranking(y, probs, flipped),
                "flagged": len(ranked),
                "accuracy": round(float((probs.argmax(1) == y).mean()), 4),
            }
        )
        print(json.dumps(results[-1]), flush=True)
    return results


def machine() -> dict[str, str]:
    import torch

    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line), platform.processor())
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    return {
        "cpu": model,
        "cores": str(sum(1 for line in cpuinfo if line.startswith("processor"))),
        "torch_threads": str(torch.get_num_threads()),
        "load_average_at_start": " ".join(load),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scorers", nargs="+", choices=("embeddings", "finetune", "run", "run-stacked"), default=["embeddings"]
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--run", type=Path, nargs="+", help="trained runs (default: train --run-config first)")
    parser.add_argument("--run-config", type=Path, default=EXAMPLE, help="what to train for `run` without --run")
    parser.add_argument("--rows", type=int, default=None, help="the first N dev rows (default all 872)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, help="finetune: epochs per fold")
    parser.add_argument("--learning-rate", type=float, help="finetune: learning rate")
    args = parser.parse_args()
    context = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["bench/audit_flips.py", *sys.argv[1:]]),
        **machine(),
    }
    with tempfile.TemporaryDirectory() as folder:
        if any(name.startswith("run") for name in args.scorers) and args.run is None:
            trained, seconds = train_run(Path(folder), args.run_config)
            args.run = [trained]
            context["run_training_wall_s"] = str(round(seconds, 1))
            print(f"trained {trained} in {seconds:.0f} s", flush=True)
        results = [row for seed in args.seeds for row in measure(args, seed)]
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a", encoding="utf-8") as handle:
        for row in results:
            handle.write(json.dumps({**row, **context}) + "\n")
    print(json.dumps(context, indent=2))


if __name__ == "__main__":
    main()
