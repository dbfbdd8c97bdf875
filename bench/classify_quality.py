"""Quality table of the classify recipe: every method on MiniLM-L6 + SST-2, and SmolLM2-135M as generation.

Part 1: ``examples/classify-sst2.yaml`` (all-MiniLM-L6-v2 with a classification head, SST-2 training slice, the full
872-row dev set) with each method: dev accuracy, trainable parameters, seconds per epoch (one epoch each).
Part 2: ``smollm2-135m`` with ``task.classify.head: generation`` (label words, predictions constrained to the label
set): the base model zero-shot against LoRA, on the first --gen-test-rows dev rows.

Each configuration is a real ``tunesmith`` run (prepare -> train -> evaluate) in a temporary folder. Heavy: run it
alone, e.g. ``flock /tmp/tunesmith-heavy.lock .venv/bin/python bench/classify_quality.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "classify-sst2.yaml"

# Per-method settings: learning rates in each method's usual range (virtual-token and rescaling methods need
# larger ones), and the method's own section.
METHODS: dict[str, dict[str, Any]] = {
    "full": {"lr": 1e-4, "method": {}},
    "freeze": {"lr": 5e-4, "method": {"freeze": {"train_layers": 2, "train_head": True}}},
    "lora": {"lr": 1e-3, "method": {"lora": {"r": 16, "alpha": 32, "target_modules": "all-linear"}}},
    "prefix": {"lr": 1e-2, "method": {"prefix": {"num_virtual_tokens": 20}}},
    "prompt": {"lr": 3e-2, "method": {"prompt": {"num_virtual_tokens": 20}}},
    "ia3": {"lr": 1e-2, "method": {}},
    # BERT's attention and feed-forward outputs are both named `output.dense` (attention.output.dense, output.dense)
    "adapter": {"lr": 1e-3, "method": {"adapter": {"size": 64, "target_modules": ["output.dense"]}}},
}
GEN_PROMPT = "Is the sentiment of this review positive or negative? Answer with one word.\n\nReview: {text}"


def run_config(config: dict[str, Any], folder: Path, name: str) -> dict[str, Any]:
    """Run one config to the end; return its evaluation metrics and training summary."""
    from tunesmith.core.config import validate_config
    from tunesmith.core.fs import read_json
    from tunesmith.pipeline.run import Run

    config = {**config, "output": {"dir": str(folder), "name": name}}
    run = Run(validate_config(config, source=name))
    started = time.perf_counter()
    metrics = run.run(force=True)
    state = read_json(run.dir.root / "state.json")
    return {
        "metrics": metrics,
        "train": state["stages"]["train"],
        "wall_s": time.perf_counter() - started,
    }


def example_config(train_rows: int, max_len: int) -> dict[str, Any]:
    config = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    for key in ("train", "test"):
        config["data"][key] = str((EXAMPLE.parent / config["data"][key]).resolve())
    config["data"]["train_rows"] = train_rows
    config["training"]["max_seq_len"] = max_len
    config["eval"]["bootstrap_samples"] = 200
    return config


def head_methods(args: argparse.Namespace, folder: Path) -> list[dict[str, Any]]:
    rows = []
    for name in args.methods:
        config = example_config(args.train_rows, args.max_len)
        settings = METHODS[name]
        config["method"] = {"name": name, **settings["method"]}
        config["training"]["learning_rate"] = settings["lr"]
        result = run_config(config, folder, f"minilm-{name}")
        tuned, train = result["metrics"]["tuned"], result["train"]
        rows.append(
            {
                "method": name,
                "learning_rate": settings["lr"],
                "accuracy": tuned["accuracy"],
                "macro_f1": tuned["macro_f1"],
                "trainable": train["trainable_parameters"],
                "seconds_per_epoch": train["seconds"],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def generation(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    config = example_config(args.gen_train_rows, 128)
    config["model"] = {"name": "smollm2-135m"}
    config["data"]["test_rows"] = args.gen_test_rows
    config["task"] = {"name": "classify", "classify": {"head": "generation", "prompt": GEN_PROMPT}}
    config["method"] = {"name": "lora", "lora": {"r": 16, "alpha": 32, "target_modules": "all-linear"}}
    config["training"] |= {"batch_size": 8, "learning_rate": 3e-4, "packing": False}
    config["eval"]["batch_size"] = 16
    result = run_config(config, folder, "smollm2-generation")
    metrics = result["metrics"]
    row = {
        "base_accuracy": metrics["base"]["accuracy"],
        "tuned_accuracy": metrics["tuned"]["accuracy"],
        "trainable": result["train"]["trainable_parameters"],
        "seconds_per_epoch": result["train"]["seconds"],
        "test_rows": args.gen_test_rows,
        "train_rows": args.gen_train_rows,
    }
    print(json.dumps(row), flush=True)
    return row


def table(rows: list[dict[str, Any]], gen: dict[str, Any] | None, args: argparse.Namespace) -> str:
    lines = [
        f"MiniLM-L6 + classification head, SST-2: {args.train_rows} training rows, 1 epoch, batch 32, "
        f"max_seq_len {args.max_len}; full dev set (872 rows).",
        "",
        "| method | learning rate | dev accuracy | macro F1 | trainable parameters | seconds / epoch |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['learning_rate']:g} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} | "
            f"{r['trainable']:,} | {r['seconds_per_epoch']:.0f} |"
        )
    if gen:
        lines += [
            "",
            f"SmolLM2-135M-Instruct, classification as generation (label words, constrained to the label set), "
            f"SST-2: LoRA r16 on {gen['train_rows']} training rows, 1 epoch; first {gen['test_rows']} dev rows.",
            "",
            "| model | dev accuracy | trainable parameters | seconds / epoch |",
            "|---|---|---|---|",
            f"| base, zero-shot | {gen['base_accuracy']:.3f} | 0 | - |",
            f"| LoRA | {gen['tuned_accuracy']:.3f} | {gen['trainable']:,} | {gen['seconds_per_epoch']:.0f} |",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--train-rows", type=int, default=2000)
    parser.add_argument("--max-len", type=int, default=64)
    parser.add_argument("--gen-train-rows", type=int, default=320)
    parser.add_argument("--gen-test-rows", type=int, default=200)
    parser.add_argument("--no-generation", action="store_true")
    parser.add_argument("--out", type=Path, help="Also write the results as JSON here.")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="classify-bench-") as tmp:
        rows = head_methods(args, Path(tmp))
        gen = None if args.no_generation else generation(args, Path(tmp))
    total = time.perf_counter() - started
    text = table(rows, gen, args)
    print(f"\n{text}\n\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores; total {total:.0f} s")
    if args.out:
        args.out.write_text(json.dumps({"head": rows, "generation": gen, "total_s": total}, indent=2))


if __name__ == "__main__":
    main()
