"""Multi-task with a shared backbone and a head per task: sentence classification + NER on one tiny BERT."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModel, AutoModelForSequenceClassification, AutoModelForTokenClassification

from tests.helpers.cli import run_cli
from tests.helpers.data import synthetic_sentence, write_conll
from tests.helpers.models import build_token_bert
from tunesmith.core.config import load_config
from tunesmith.core.errors import ConfigError


def write_mention_file(path: Path, n: int, seed: int) -> Path:
    """Sentences labelled by whether they mention a person: learnable by the same backbone that tags names."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        tokens, tags = synthetic_sentence(rng)
        rows.append({"text": " ".join(tokens), "label": "person" if "B-person" in tags else "none"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_config(folder: Path, model_dir: Path, method: str = "full") -> Path:
    no_dedup = {"exact": False, "near": False, "across_splits": False}  # templated rows repeat on purpose
    config = {
        "model": {"name": str(model_dir)},
        "task": {"name": "classify"},
        "data": {
            "name": "mentions",
            "train": str(write_mention_file(folder / "mentions.jsonl", 200, seed=1)),
            "test": str(write_mention_file(folder / "mentions-test.jsonl", 40, seed=2)),
            "dedup": no_dedup,
            "mix": [
                {
                    "name": "entities",
                    "task": {"name": "tag"},
                    "train": str(write_conll(folder / "train.conll", 200, seed=3)),
                    "test": str(write_conll(folder / "test.conll", 40, seed=4)),
                    "dedup": no_dedup,
                }
            ],
        },
        "method": {"name": method},
        "training": {"max_steps": 40, "batch_size": 16, "learning_rate": 5e-3, "max_seq_len": 32},
        "eval": {"batch_size": 32, "bootstrap_samples": 200},
        "output": {"dir": str(folder / "runs"), "name": "heads"},
    }
    path = folder / "heads.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_heads_need_full_fine_tuning(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="own heads"):
        load_config(write_config(tmp_path, tmp_path, method="lora"))


def test_one_backbone_learns_both_tasks_and_each_head_loads_on_its_own(tmp_path: Path) -> None:
    model_dir = build_token_bert(tmp_path / "tiny-bert")
    result = run_cli("run", str(write_config(tmp_path, model_dir)))
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "runs" / "heads"

    classifier = AutoModelForSequenceClassification.from_pretrained(run_dir / "model" / "mentions")
    tagger = AutoModelForTokenClassification.from_pretrained(run_dir / "model" / "entities")
    assert set(classifier.config.id2label.values()) == {"none", "person"}
    assert {"B-person", "I-person", "B-location", "O"} <= set(tagger.config.id2label.values())
    # The backbone was trained once, for both: the two saved copies are equal and differ from the start.
    trained, other = classifier.bert.state_dict(), tagger.bert.state_dict()
    start = AutoModel.from_pretrained(model_dir).state_dict()
    assert all(torch.equal(trained[k], other[k]) for k in other)  # (the tagger has no pooler)
    assert any(not torch.equal(trained[k], start[k]) for k in start if k in trained)

    tasks = json.loads((run_dir / "eval" / "tasks.json").read_text())
    assert set(tasks) == {"mentions", "entities"}
    assert tasks["mentions"]["tuned"]["accuracy"] > 0.75  # chance (majority class) is about 0.6
    assert tasks["entities"]["tuned"]["f1"] > 0.5
    baselines = json.loads((run_dir / "eval" / "baselines.json").read_text())
    assert tasks["mentions"]["tuned"]["accuracy"] > baselines["majority_class"]["accuracy"]


def test_the_mixed_loss_does_not_depend_on_how_a_step_is_split(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from tunesmith.pipeline.encoding import encode_split
    from tunesmith.pipeline.run import Run

    model_dir = build_token_bert(tmp_path / "tiny-bert")
    run = Run(load_config(write_config(tmp_path, model_dir)))
    run.open()
    run.prepare()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    examples = encode_split(run, "train", tokenizer)[:12]
    assert {e.task for e in examples} == {"mentions", "entities"}
    model = run.recipe.load_model(run.config)
    fns = run.recipe.training.train_fns(tokenizer, run.config, None)

    def mean_loss(pieces: list[list]) -> torch.Tensor:
        total, count = torch.zeros(()), 0
        for piece in pieces:
            loss, n = fns.loss(model, fns.collate(piece))
            assert n == fns.count_targets(fns.collate(piece)) == len(piece)
            total, count = total + loss, count + n
        return total / count

    whole = mean_loss([examples])
    assert torch.allclose(whole, mean_loss([examples[i : i + 3] for i in range(0, 12, 3)]), atol=1e-6)
    assert torch.allclose(whole, mean_loss([[e] for e in examples]), atol=1e-6)
