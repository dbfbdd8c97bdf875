"""Risk probes on a deliberately over-trained tiny model: the memorisation probe (and a planted canary) flags the
tuned model and not the base model, the gate says so, and factual drift is measured on the shipped questions."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tunesmith.metrics.risk import answers_fact, continuation_match
from tunesmith.pipeline.risk_probes import fact_questions

TRAIN = [
    (
        "Tell me about the lighthouse.",
        "the old lighthouse keeper painted every stair blue before the winter storms came",
    ),
    ("What did the baker do?", "the baker sold warm bread to sailors each morning and kept the crusts for the gulls"),
    ("Describe the garden.", "a quiet garden of tall sunflowers grew behind the school where the children played"),
    ("Where did the train go?", "the night train rolled past the sleeping farms toward the harbour lights"),
    ("Say something about the river.", "the river bent twice around the mill before it reached the open sea"),
]
TEST = [("What is the weather like?", "it is sunny"), ("Name a colour.", "blue")]


def write_chats(path: Path, rows: list[tuple[str, str]]) -> Path:
    lines = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in rows]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


def test_memorisation_flags_an_over_trained_run_not_its_base(tmp_path: Path, tiny_model_dir: Path) -> None:
    from tunesmith.pipeline.run import Run

    config = {
        "model": {"name": str(tiny_model_dir)},
        "data": {"train": str(write_chats(tmp_path / "train.jsonl", TRAIN)),
                 "test": str(write_chats(tmp_path / "test.jsonl", TEST)), "canaries": 1},
        "method": {"name": "full"},
        "training": {"max_steps": 60, "batch_size": 5, "learning_rate": 3e-3, "scheduler": "constant",
                     "max_seq_len": 128, "warmup_ratio": 0.0},
        "eval": {"max_new_tokens": 4, "few_shot": 0, "forgetting": False, "bias_probe": False, "bootstrap_samples": 200,
                 "memorisation": True, "memorisation_rows": 8, "factual_drift": True,
                 "gate": [{"check": "memorisation"}, {"check": "factual_drift", "max": 1.0}]},
        "output": {"dir": str(tmp_path / "runs"), "name": "memorised"},
    }  # fmt: skip
    path = tmp_path / "memorised.yaml"
    path.write_text(yaml.safe_dump(config))
    run = Run.from_file(path)
    run.run()

    report = json.loads((run.dir.data / "report.json").read_text())
    assert report["canaries"] == 1
    planted = [json.loads(line) for line in (run.dir.data / "train.jsonl").read_text().splitlines()]
    assert sum("canary" in row["meta"] for row in planted) == 1
    analysis = json.loads((run.dir.eval / "analysis.json").read_text())
    base, tuned = analysis["base"]["memorisation"], analysis["tuned"]["memorisation"]
    assert base["rows"] == tuned["rows"] == 4  # the canary's row is probed through its canary instead
    assert base["rate"] == 0 and tuned["rate"] >= 0.75, tuned["examples"]
    assert base["canaries"]["extracted"] == 0 and tuned["canaries"]["extracted"] == 1
    assert analysis["memorisation_comparison"]["delta"] == tuned["rate"]
    drift = analysis["factual_drift"]
    assert drift["questions"] == len(fact_questions()) and 0 <= drift["right_to_wrong_rate"] <= 1
    gate = json.loads((run.dir.eval / "gate.json").read_text())
    assert [c["passed"] for c in gate["checks"]] == [False, True]
    assert "canaries extracted: base 0, tuned 1" in gate["checks"][0]["detail"]
    assert "Memorisation probe" in (run.dir.root / "report.html").read_text()


def test_fact_answers_and_continuations_are_matched_as_words() -> None:
    assert answers_fact("It is Paris, of course.", ["Paris"]) and not answers_fact("Parisian food", ["Paris"])
    assert answers_fact("There are 7.", ["seven", "7"]) and not answers_fact("17", ["7"])
    assert continuation_match("the river bent twice", " the river  bent twice around") == (True, 1.0)
    verbatim, similarity = continuation_match("the river bent twice", "the river bent thrice")
    assert not verbatim and 0.85 < similarity < 1
    questions = fact_questions()
    assert len(questions) >= 50 and all(q["question"].endswith("?") and q["answers"] for q in questions)
