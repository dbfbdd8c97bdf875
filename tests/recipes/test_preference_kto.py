"""KTO from user feedback: the chat-log converter (`tunesmith data feedback`) and a KTO run that learns which
replies users liked."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.helpers.cli import run_cli, run_cli_in_process
from tests.helpers.paths import REPO
from tunesmith.pipeline.run import Run


def test_feedback_converter_turns_rated_replies_into_kto_rows(tmp_path: Path) -> None:
    out = tmp_path / "kto.jsonl"
    result = run_cli("data", "feedback", str(REPO / "examples" / "data" / "feedback_log.jsonl"), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "17 rated replies from 16 conversations" in result.stdout and "1 unrated skipped" in result.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 17 and sum(r["label"] for r in rows) == 9
    # The second rated reply of a conversation has the whole conversation before it as its prompt.
    ant = next(r for r in rows if r["completion"] == "Ants have six legs.")
    assert [m["role"] for m in ant["prompt"]] == ["user", "assistant", "user"] and ant["label"] is True


def test_feedback_converter_names_the_bad_line(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello", "rating": "up"}]}
    bad = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo", "rating": "meh"}]}
    log.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    result = run_cli_in_process("data", "feedback", str(log), "--out", str(tmp_path / "out.jsonl"))
    assert result.returncode != 0
    assert f"{log}:2" in result.stderr and "messages[1].rating" in result.stderr and "'meh'" in result.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_kto_learns_from_thumbs_up_and_down(tiny_model_dir: Path, tmp_path: Path) -> None:
    lines = (REPO / "examples" / "data" / "sst2" / "train.tsv").read_text(encoding="utf-8").splitlines()[1:41]
    rows = []
    for i, line in enumerate(lines):  # users liked 'positive' and disliked 'negative', on different prompts
        reply, label = ("positive", True) if i % 2 == 0 else ("negative", False)
        rows.append({"prompt": f"Sentiment of: {line.split(chr(9))[0]}", "completion": reply, "label": label})
    data = tmp_path / "feedback.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {
        "model": {"name": str(tiny_model_dir)},
        "task": {"name": "kto", "preference": {"beta": 0.5}},
        "data": {"train": str(data), "test_fraction": 0.25},
        "method": {"name": "lora", "lora": {"r": 8, "alpha": 16, "dropout": 0.0}},
        "training": {"max_steps": 10, "batch_size": 4, "max_seq_len": 64, "learning_rate": 5e-3},
        "eval": {"max_new_tokens": 3, "batch_size": 8},
        "output": {"dir": str(tmp_path / "runs"), "name": "kto"},
    }
    path = tmp_path / "kto.yaml"
    path.write_text(yaml.safe_dump(config))
    run = Run.from_file(path)
    metrics = run.run()
    tuned = metrics["tuned"]
    assert tuned["reward_accuracy"] > 0.8
    assert tuned["desirable_reward"] > 0 > tuned["undesirable_reward"]
    losses = [json.loads(line)["loss"] for line in run.dir.metrics.read_text().splitlines()]
    assert losses[-1] < losses[0]
