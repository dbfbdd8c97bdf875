"""Small task-head runs trained in this process (classify on SST-2 with a tiny BERT), for the shipping tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.helpers.paths import SST2

LORA = {"name": "lora", "lora": {"r": 4, "alpha": 8, "dropout": 0.0}}
QUICK_EVAL = {"batch_size": 32, "bootstrap_samples": 100, "bias_probe": False}


def train(path: Path) -> Path:
    """Run every stage of the config in this process; return the run directory."""
    from tunesmith.pipeline.run import Run

    run = Run.from_file(path)
    run.run()
    return run.dir.root


def write_config(folder: Path, name: str, config: dict[str, Any]) -> Path:
    config.setdefault("output", {"dir": str(folder / "runs"), "name": name})
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def classify_config(folder: Path, model_dir: Path, name: str, method: dict, seed: int) -> Path:
    return write_config(
        folder,
        name,
        {
            "model": {"name": str(model_dir)},
            "task": {"name": "classify"},
            "data": {
                "train": str(SST2 / "train.tsv"),
                "test": str(SST2 / "dev.tsv"),
                "label_names": {0: "negative", 1: "positive"},
                "train_rows": 64,
                "test_rows": 16,
            },
            "method": method,
            "training": {"max_steps": 4, "batch_size": 8, "learning_rate": 5e-3, "max_seq_len": 32, "seed": seed},
            "eval": QUICK_EVAL,
        },
    )
