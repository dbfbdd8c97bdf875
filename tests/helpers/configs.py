"""Run configs written for the tiny models: sft on SST-2, tag, qa and preference tasks."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.helpers.data import synthetic_squad, write_conll, write_pairs
from tests.helpers.paths import SST2


def write_tiny_config(folder: Path, model_dir: Path, **sections: dict) -> Path:
    """A run config on the SST-2 slice with the tiny model; ``sections`` update the defaults."""
    config = {
        "model": {"name": str(model_dir)},
        "data": {
            "train": str(SST2 / "train.tsv"),
            "test": str(SST2 / "dev.tsv"),
            "prompt_template": "Sentiment of: {sentence}",
            "completion_template": "{label}",
            "label_names": {0: "negative", 1: "positive"},
            "train_rows": 32,
            "test_rows": 12,
        },
        "training": {"max_steps": 3, "batch_size": 4, "max_seq_len": 64},
        "eval": {"max_new_tokens": 3, "batch_size": 6},
        "output": {"dir": str(folder / "runs"), "name": "tiny"},
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def write_tag_config(folder: Path, model_dir: Path, **sections: dict) -> Path:
    config = {
        "model": {"name": str(model_dir)},
        "data": {
            "train": str(write_conll(folder / "train.conll", 240, seed=1)),
            "test": str(write_conll(folder / "test.conll", 60, seed=2)),
            "dedup": {"exact": False, "near": False, "across_splits": False},  # templated rows repeat on purpose
        },
        "task": {"name": "tag"},
        "method": {"name": "full"},
        "training": {
            "max_steps": 30,
            "batch_size": 16,
            "learning_rate": 5e-3,
            "max_seq_len": 32,
            "scheduler": "linear",
        },
        "eval": {"batch_size": 32, "bootstrap_samples": 200},
        "output": {"dir": str(folder / "runs"), "name": "tag"},
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    path = folder / "tag.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def write_qa_config(folder: Path, model_dir: Path, **sections: dict) -> Path:
    train, test = folder / "train.json", folder / "test.json"
    train.write_text(json.dumps(synthetic_squad(200, seed=1)), encoding="utf-8")
    test.write_text(json.dumps(synthetic_squad(40, seed=2)), encoding="utf-8")
    config = {
        "model": {"name": str(model_dir)},
        "data": {
            "train": str(train),
            "test": str(test),
            "dedup": {"exact": False, "near": False, "across_splits": False},
        },
        # Windows of 32 tokens: a context (~25 tokens) and its question need two or three of them.
        "task": {"name": "qa", "qa": {"doc_stride": 8, "max_question_len": 10}},
        "method": {"name": "full"},
        "training": {
            "max_steps": 40,
            "batch_size": 16,
            "learning_rate": 3e-3,
            "max_seq_len": 32,
            "scheduler": "linear",
        },
        "eval": {"batch_size": 32, "bootstrap_samples": 200},
        "output": {"dir": str(folder / "runs"), "name": "qa"},
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    path = folder / "qa.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def pref_config(folder: Path, model_dir: Path, task: str, **sections: dict) -> Path:
    data = write_pairs(folder / "pairs.jsonl")
    config = {
        "model": {"name": str(model_dir)},
        "task": {"name": task, "preference": {"beta": 0.5}},
        "data": {"train": str(data), "test_fraction": 0.25},
        "method": {"name": "lora", "lora": {"r": 8, "alpha": 16}},
        "training": {"max_steps": 12, "batch_size": 4, "max_seq_len": 64, "learning_rate": 5e-3},
        "eval": {"max_new_tokens": 4, "batch_size": 8},
        "output": {"dir": str(folder / "runs"), "name": task},
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    path = folder / f"{task}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def sweep_config(folder: Path, model_dir: Path, sweep: dict, **sections: dict) -> Path:
    """The tiny run config with validation data, a validation loss every step, and a sweep section."""
    config = write_tiny_config(
        folder,
        model_dir,
        data={"validation_fraction": 0.25, "train_rows": 32, "validation_rows": 8, "dedup": {"near": False}},
        training={"max_steps": 4, "batch_size": 4, "eval_every": 1, **sections.get("training", {})},
        output={"dir": str(folder / "runs"), "name": "tiny"},
    )
    raw = yaml.safe_load(config.read_text())
    raw["sweep"] = sweep
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return config
