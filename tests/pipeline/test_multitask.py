"""Multi-task training: several datasets mixed by weight into one run, every task evaluated on its own test rows."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers.cli import run_cli
from tests.helpers.configs import write_tiny_config
from tests.helpers.paths import REPO
from tunesmith.core.config import load_config
from tunesmith.core.errors import ConfigError
from tunesmith.core.fs import read_jsonl
from tunesmith.data.mix import mix_counts, mix_rows

TREC = REPO.parent / "shared" / "datasets" / "trec"


@pytest.mark.parametrize(
    ("sizes", "weights"),
    [({"a": 100, "b": 50}, {"a": 1.0, "b": 3.0}), ({"a": 7, "b": 13, "c": 1}, {"a": 0.2, "b": 0.5, "c": 0.3})],
)
def test_mix_counts_follow_the_weights_and_keep_the_total(sizes: dict, weights: dict) -> None:
    counts = mix_counts(sizes, weights)
    total = sum(sizes.values())
    assert sum(counts.values()) == total
    for name, count in counts.items():
        assert abs(count - total * weights[name] / sum(weights.values())) < 1


def test_mixed_rows_upsample_a_small_task_and_subsample_a_large_one() -> None:
    parts = {"big": [f"big{i}" for i in range(300)], "small": [f"small{i}" for i in range(20)]}
    mixed = mix_rows(parts, {"big": 1.0, "small": 1.0}, seed=0)
    by_task = Counter(row.rstrip("0123456789") for row in mixed)
    assert by_task == {"big": 160, "small": 160}
    small = Counter(row for row in mixed if row.startswith("small"))
    assert set(small.values()) == {8}  # every small row 8 times: upsampled evenly, none left out
    assert len(set(mixed) & set(parts["big"])) == 160  # big rows drawn without repeats
    assert mixed != sorted(mixed, key=lambda r: r.startswith("small"))  # shuffled together
    assert mix_rows(parts, {"big": 1.0, "small": 1.0}, seed=0) == mixed  # seeded
    random.seed(1)  # the global RNG plays no part
    assert mix_rows(parts, {"big": 1.0, "small": 1.0}, seed=0) == mixed


def test_task_names_must_differ(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = write_tiny_config(
        tmp_path, tiny_model_dir, data={"mix": [{"name": "main", "train": str(TREC / "TREC_10.label")}]}
    )
    with pytest.raises(ConfigError, match="must all differ"):
        load_config(config)


def test_a_mixed_run_trains_on_both_tasks_by_weight_and_evaluates_each(tiny_model_dir: Path, tmp_path: Path) -> None:
    topic = {
        "name": "topic",
        "weight": 3.0,
        "train": str(TREC / "train_5500.label"),
        "test": str(TREC / "TREC_10.label"),
        "train_rows": 24,
        "test_rows": 6,
        "system_prompt": "Give the question's answer type.",
    }
    config = write_tiny_config(
        tmp_path,
        tiny_model_dir,
        data={"name": "sentiment", "mix": [topic]},
        eval={"forgetting": False, "bias_probe": False, "few_shot": 1},
    )
    result = run_cli("run", str(config))
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "runs" / "tiny"

    report = json.loads((run_dir / "data" / "report.json").read_text())
    assert report["mix"] == {"sentiment": 14, "topic": 42}  # 56 rows shared 1:3
    rows = list(read_jsonl(run_dir / "data" / "train.jsonl"))
    assert Counter(r["meta"]["task"] for r in rows) == {"sentiment": 14, "topic": 42}
    topic_rows = [r for r in rows if r["meta"]["task"] == "topic"]
    assert all(
        r["messages"][0] == {"role": "system", "content": topic["system_prompt"], "weight": None} for r in topic_rows
    )
    assert report["tasks"]["topic"]["rows"]["test"] == 6

    tasks = json.loads((run_dir / "eval" / "tasks.json").read_text())
    assert set(tasks) == {"sentiment", "topic"}
    assert "accuracy" in tasks["sentiment"]["tuned"]  # label words: classification metrics
    assert "exact_match" in tasks["topic"]["tuned"]  # free-text labels of the other task
    topic_predictions = list(read_jsonl(run_dir / "eval-topic" / "predictions.jsonl"))
    assert len(topic_predictions) == 6 and topic_predictions[0]["reference"].count(":") == 1
