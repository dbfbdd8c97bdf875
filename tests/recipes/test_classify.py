"""The classify recipe end to end: a tiny BERT learns TREC-6 question types through the real CLI, beats the majority
class, and its run predicts (`tunesmith predict`) and serves (`/v1/classify`) labels with probabilities."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.helpers.cli import run_cli, serving
from tests.helpers.models import build_classify_bert
from tests.helpers.paths import REPO
from tunesmith.metrics.bias import counterfactual

TREC = REPO.parent / "shared" / "datasets" / "trec"
CLASSES = {"ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"}
QUESTIONS = [
    "Who wrote the Declaration of Independence ?",
    "Where is the Eiffel Tower ?",
    "How many legs does a spider have ?",
    "What does NASA stand for ?",
]


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_classify_bert(tmp_path_factory.mktemp("tiny-bert"))


def trec_config(folder: Path, model_dir: Path, **sections: dict) -> Path:
    config = {
        "model": {"name": str(model_dir)},
        "data": {
            "train": str(TREC / "train_5500.label"),
            "test": str(TREC / "TREC_10.label"),
            "train_rows": 800,
            "test_rows": 200,
        },
        "task": {"name": "classify", "classify": {"label_separator": ":"}},
        "method": {"name": "full"},
        "training": {"max_steps": 80, "batch_size": 16, "learning_rate": 3e-3, "max_seq_len": 16},
        "eval": {"batch_size": 50, "bootstrap_samples": 200},
        "output": {"dir": str(folder / "runs"), "name": "trec"},
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    path = folder / "trec.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trec_run(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    folder = tmp_path_factory.mktemp("trec")
    result = run_cli("run", str(trec_config(folder, tiny_bert_dir)))
    return folder / "runs" / "trec", result


def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_cli_run_learns_trec_and_beats_the_majority_class(trec_run: tuple[Path, subprocess.CompletedProcess]) -> None:
    run_dir, result = trec_run
    assert result.returncode == 0, result.stderr
    assert "parameters trainable (100.00%)" in result.stderr
    # Library tables and notices go to the run's log, not the terminal (a fresh head: transformers' LOAD REPORT).
    assert "LOAD REPORT" not in result.stderr and "Setting accelerator" not in result.stdout + result.stderr
    assert "LOAD REPORT" in (run_dir / "logs" / "libraries.log").read_text(encoding="utf-8")
    metrics = _read(run_dir / "eval" / "metrics.json")
    assert "base" not in metrics  # a fresh head has no meaningful base model
    tuned = metrics["tuned"]
    majority = _read(run_dir / "eval" / "baselines.json")["majority_class"]
    assert tuned["accuracy"] > majority["accuracy"] + 0.15, (tuned, majority)
    assert tuned["macro_f1"] > majority["macro_f1"] + 0.15
    for key in ("micro_f1", "weighted_f1", "macro_precision", "macro_recall", "ece"):
        assert 0.0 <= tuned[key] <= 1.0
    assert "roc_auc" not in tuned  # six classes: ROC-AUC is reported for binary tasks only

    comparison = _read(run_dir / "eval" / "comparison.json")
    assert comparison  # tuned vs majority class, with intervals and McNemar's test
    analysis = _read(run_dir / "eval" / "analysis.json")
    assert analysis["compared_with"] == "majority_class"
    details = analysis["tuned"]["details"]
    assert set(details["per_class"]) == CLASSES
    matrix = details["confusion_matrix"]["matrix"]
    assert sum(map(sum, matrix)) == 200
    errors = analysis["tuned"]["errors"]  # where the report shows it
    assert sum(c["errors"] for c in errors["per_class"].values()) == round(200 * (1 - tuned["accuracy"]))
    confident = [e["confidence"] for e in errors["most_confident_errors"]]
    assert confident == sorted(confident, reverse=True) and all(
        e["prediction"] != e["reference"] for e in errors["most_confident_errors"]
    )

    rows = [json.loads(line) for line in (run_dir / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 200
    # Bias probe: every test question naming a gendered or identity term is asked again with the terms swapped.
    test_rows = (TREC / "TREC_10.label").read_text(encoding="utf-8").splitlines()[:200]
    expected = sum(counterfactual(line.split(" ", 1)[1]) is not None for line in test_rows)
    bias = analysis["tuned"]["bias"]
    assert expected > 0 and bias["rows_probed"] == expected and 0 <= bias["flip_rate"] <= 1
    assert all(flip["answer"] != flip["swapped"] for flip in bias["flips"])
    for row in rows:
        probs = row["tuned"]["probabilities"]
        assert set(probs) == CLASSES and abs(sum(probs.values()) - 1) < 1e-4
        assert row["tuned"]["prediction"] == max(probs, key=probs.get)
    report = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "Confusion matrices" in report and "Error analysis (tuned)" in report and "majority class" in report


def test_predict_writes_labels_with_probabilities_and_resumes(
    trec_run: tuple[Path, subprocess.CompletedProcess], tmp_path: Path
) -> None:
    run_dir, _ = trec_run
    source = tmp_path / "questions.jsonl"
    rows = [{"question_id": i, "text": q} for i, q in enumerate(QUESTIONS)] + [{"text": " "}]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    out = tmp_path / "labels.jsonl"
    result = run_cli("predict", str(run_dir), "--input", str(source), "--output", str(out))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["row"] for line in lines] == [1, 2, 3, 4, 5]
    for line in lines[:4]:
        assert line["prediction"] in CLASSES and set(line["probabilities"]) == CLASSES
        assert line["confidence"] == max(line["probabilities"].values())
    assert lines[4]["prediction"] is None and "empty" in lines[4]["error"]

    again = run_cli("predict", str(run_dir), "--input", str(source), "--output", str(out))
    assert again.returncode == 0 and "nothing to do" in again.stderr
    sampled = run_cli(
        "predict", str(run_dir), "--input", str(source), "--output", str(tmp_path / "x.jsonl"), "--temperature", "0.7"
    )
    assert sampled.returncode == 2 and "does not sample" in sampled.stderr


@pytest.fixture(scope="module")
def server(
    trec_run: tuple[Path, subprocess.CompletedProcess], tuned_run_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`tunesmith serve` with the classification run and a chat (sft) run side by side."""
    run_dir, _ = trec_run
    with serving([str(run_dir), str(tuned_run_dir)], tmp_path_factory.mktemp("serve") / "server.log") as url:
        yield url


def test_classify_endpoint_returns_labels_and_openai_style_errors(
    server: str, trec_run: tuple[Path, subprocess.CompletedProcess]
) -> None:
    run_dir, _ = trec_run
    url = f"{server}/v1/classify"
    one = httpx.post(url, json={"model": "trec", "input": QUESTIONS[0]}, timeout=60)
    assert one.status_code == 200, one.text
    body = one.json()
    assert body["model"] == "trec" and len(body["data"]) == 1
    entry = body["data"][0]
    assert entry["label"] in CLASSES and entry["score"] == max(entry["probabilities"].values())

    many = httpx.post(url, json={"model": "trec", "input": QUESTIONS}, timeout=60).json()
    assert [d["index"] for d in many["data"]] == [0, 1, 2, 3]
    # The same text gets the same answer alone or in a batch (padded with others: equal to float rounding).
    first = many["data"][0]
    assert first["label"] == entry["label"] and first["index"] == 0
    assert first["probabilities"] == pytest.approx(entry["probabilities"], abs=2e-6)

    # The same labels as `tunesmith predict` and evaluation give for these rows.
    evaluated = [json.loads(x) for x in (run_dir / "eval" / "predictions.jsonl").read_text().splitlines()[:3]]
    tests = (TREC / "TREC_10.label").read_text().splitlines()
    texts = [tests[int(e["source"].rsplit(":", 1)[1]) - 1].split(" ", 1)[1].strip() for e in evaluated]
    served = httpx.post(url, json={"model": "trec", "input": texts}, timeout=60).json()["data"]
    assert [d["label"] for d in served] == [e["tuned"]["prediction"] for e in evaluated]

    def error(response: httpx.Response, status: int) -> dict:
        assert response.status_code == status, response.text
        return response.json()["error"]

    assert error(httpx.post(url, json={"model": "trec"}), 400)["param"] == "input"
    assert "at least one" in error(httpx.post(url, json={"model": "trec", "input": []}), 400)["message"]
    assert error(httpx.post(url, json={"model": "nope", "input": "x"}), 404)["code"] == "model_not_found"
    assert error(httpx.post(url, json={"model": "tuned", "input": "x"}), 400)["code"] == "model_not_classifier"
    chat = httpx.post(
        f"{server}/v1/chat/completions", json={"model": "trec", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert error(chat, 400)["code"] == "model_not_generative"
    # The chat run still chats.
    reply = httpx.post(
        f"{server}/v1/chat/completions",
        json={
            "model": "tuned",
            "messages": [{"role": "user", "content": "Sentiment of: a fine film ."}],
            "max_tokens": 4,
        },
        timeout=60,
    )
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"]


def test_a_trained_classify_run_pre_labels_rows_with_its_head(
    trec_run: tuple[Path, subprocess.CompletedProcess], tmp_path: Path
) -> None:
    run_dir, _ = trec_run
    data = tmp_path / "questions.jsonl"
    rows = [{"text": q} for q in QUESTIONS] + [{"text": "Who was Galileo ?", "label": "LOC"}]  # a person's label
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    out = tmp_path / "labelled.jsonl"
    labels = ",".join(sorted(CLASSES))
    result = run_cli("data", "annotate", str(data), "--model", str(run_dir), "--labels", labels, "--out", str(out))
    assert result.returncode == 0, result.stderr
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert written[-1]["label"] == "LOC" and "label_source" not in written[-1]  # never overwritten
    for row in written[:-1]:
        assert row["label_source"] == "model" and row["label"] in CLASSES and 0 < row["confidence"] <= 1
    # The same classes the run's own predictions give (its head, renormalised over the same label set).
    check = run_cli("predict", str(run_dir), "--input", str(data), "--output", str(tmp_path / "p.jsonl"))
    assert check.returncode == 0, check.stderr
    own = [json.loads(line)["prediction"] for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [row["label"] for row in written[:-1]] == own[:-1]
