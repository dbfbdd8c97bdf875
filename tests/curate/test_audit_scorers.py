"""The label audit's scorers: a head fine-tuned per fold finds planted flips on real text; a trained classify run
(`data audit --run`) scores with its own model; the report names the scorer and its accuracy; a --run that cannot
score is one clear error."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tests.helpers.cli import run_cli_in_process
from tests.helpers.configs import write_tiny_config
from tests.helpers.models import build_classify_bert
from tests.helpers.paths import SST2
from tunesmith.core.config import load_config
from tunesmith.core.rundir import RunDir
from tunesmith.curate.audit import audit, format_text, label_issues
from tunesmith.curate.audit_scorers import FineTune, Scores, finetune_scorer, stacked_scorer
from tunesmith.data.labelfile import read_label_file


def sst2_slice(
    folder: Path, rows: int, fraction: float, seed: int = 0, max_words: int | None = None
) -> tuple[Path, list[str], list[int]]:
    """The first ``rows`` SST-2 dev sentences (of at most ``max_words`` words) as JSONL, ``fraction`` of their labels
    flipped (seeded)."""
    lines = (SST2 / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]
    lines = [line for line in lines if max_words is None or len(line.split()) <= max_words + 1][:rows]
    texts = [line.rsplit("\t", 1)[0].strip() for line in lines]
    labels = [line.rsplit("\t", 1)[1].strip() for line in lines]
    flipped = sorted(random.Random(seed).sample(range(rows), round(fraction * rows)))
    for i in flipped:
        labels[i] = "1" if labels[i] == "0" else "0"
    path = folder / "sst2.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(texts, labels, strict=True)))
    return path, labels, flipped


def test_the_report_names_its_scorer_and_whether_its_accuracy_is_out_of_fold(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    embeddings = np.concatenate([rng.normal(size=(20, 8)) + 4, rng.normal(size=(20, 8)) - 4])
    rows = [{"text": f"review {i}", "label": "pos" if i < 20 else "neg"} for i in range(40)]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = read_label_file(path)

    issues = audit(data, embeddings)["label_issues"]  # the default: logistic regression on the embeddings
    assert issues["scorer"] == "embeddings" and issues["out_of_fold"] is True and issues["oof_accuracy"] == 1.0
    assert "scorer embeddings: out-of-fold accuracy 100.0%" in format_text(audit(data, embeddings))

    def in_sample(texts: object, rows: np.ndarray, y: np.ndarray, classes: list[str], k: int, seed: int) -> Scores:
        probs = np.eye(len(classes))[y] * 0.8 + 0.1
        return Scores(probs, "a model that saw these rows", "run", out_of_fold=False)

    report = audit(data, embeddings, scorer=in_sample)
    assert report["label_issues"]["scorer"] == "run" and report["label_issues"]["out_of_fold"] is False
    assert "scorer run: not held-out accuracy 100.0%" in format_text(report)


def test_stacking_refits_a_biased_scorer_on_the_files_own_labels(tmp_path: Path) -> None:
    """A held-out scorer that leans towards one class (a run trained on other data, with its own class balance):
    ranked raw, the clean rows of the other class crowd out half the flips; refit on the file's labels (95% right),
    the flips come first. The refit is out-of-fold: it says so only when the scorer's own probabilities were."""
    rng = np.random.default_rng(0)
    truth = np.array([0] * 200 + [1] * 200)
    labels = truth.copy()
    flipped = sorted(rng.choice(len(truth), 20, replace=False).tolist())
    labels[flipped] = 1 - labels[flipped]
    leaning = (2 * truth - 1) * 2.0 + 3.0 + rng.normal(scale=0.5, size=len(truth))  # log-odds of class 1, +3 bias
    p1 = 1 / (1 + np.exp(-leaning))
    rows = [{"text": f"review {i}", "label": str(label)} for i, label in enumerate(labels)]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = read_label_file(path)
    embeddings = rng.normal(size=(len(truth), 8))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)  # carry no signal: the refit must use the run

    def biased(texts: object, rows: np.ndarray, y: np.ndarray, classes: list[str], k: int, seed: int) -> Scores:
        return Scores(np.stack([1 - p1, p1], axis=1)[rows], "a run trained elsewhere", "run", out_of_fold=False)

    def found(issues: dict[str, Any]) -> float:
        return len(set(issues["ranked_indices"][: len(flipped)]) & set(flipped)) / len(flipped)

    raw = audit(data, embeddings, scorer=biased)["label_issues"]
    refit = audit(data, embeddings, scorer=stacked_scorer([biased], embeddings, "test-encoder"))["label_issues"]
    print(f"recall at k: raw {found(raw):.2f}, stacked {found(refit):.2f}")
    assert found(raw) <= 0.65 and found(refit) >= 0.85  # measured 0.60 and 0.95
    assert refit["oof_accuracy"] > raw["oof_accuracy"]
    assert "stacked: a logistic regression on those log-probabilities and test-encoder embeddings" in refit["method"]
    assert refit["scorer"] == "run" and refit["out_of_fold"] is False  # the run saw these rows: so does the refit


@pytest.mark.slow
def test_a_head_fine_tuned_per_fold_finds_planted_flips_better_than_chance(tmp_path: Path) -> None:
    """minilm-l6 (the real encoder) on 120 short SST-2 sentences, 10% flipped; 3 folds of 3 short epochs."""
    from sklearn.metrics import roc_auc_score

    path, labels, flipped = sst2_slice(tmp_path, 120, 0.10, max_words=18)
    data = read_label_file(path)
    kept: list[np.ndarray] = []
    finetune = finetune_scorer(FineTune(epochs=3, batch_size=8, learning_rate=2e-4, max_length=48))

    def scorer(*args: Any) -> Scores:
        scores = finetune(*args)
        kept.append(scores.probs)
        return scores

    issues = label_issues(data, scorer, labels, folds=3, seed=0)

    assert issues["scorer"] == "finetune" and "fine-tuned 3 epochs per fold, 3-fold" in issues["method"]
    y = np.array([int(label) for label in labels])
    doubt = 1 - kept[0][np.arange(len(y)), y]  # how little the held-out model believes each given label
    auc = roc_auc_score([i in flipped for i in range(len(y))], doubt)
    k = len(flipped)
    found = len(set(issues["ranked_indices"][: 2 * k]) & set(flipped)) / k
    print(f"accuracy {issues['oof_accuracy']:.3f}, flipped-row AUROC {auc:.3f}, recall at 2k {found:.2f}")
    assert issues["out_of_fold"] is True and issues["oof_accuracy"] > 0.6  # a majority guess gets ~0.5
    assert auc >= 0.6  # chance: 0.5; measured 0.66
    assert found >= 0.25  # chance: 2k/n = 0.2; measured 0.33 (accuracy 0.71)


def train_classify_run(folder: Path, seed: int) -> Path:
    """A tiny BERT classify run trained briefly on SST-2 rows (labels named negative / positive)."""
    from tunesmith.pipeline.run import Run

    config = {
        "model": {"name": str(build_classify_bert(folder / "bert"))},
        "data": {"train": str(SST2 / "train.tsv"), "train_rows": 64, "label_names": {0: "negative", 1: "positive"}},
        "task": {"name": "classify"},
        "method": {"name": "full"},
        "training": {"max_steps": 4, "batch_size": 16, "learning_rate": 3e-3, "max_seq_len": 32, "seed": seed},
        "eval": {"enabled": False},
        "output": {"dir": str(folder / "runs"), "name": "sst2"},
    }
    path = folder / "classify.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    run = Run.from_file(path)
    run.open()
    run.prepare()
    run.train()
    return run.dir.root


@pytest.fixture(scope="module")
def classify_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_classify_run(tmp_path_factory.mktemp("classify-run"), seed=42)


def test_audit_with_run_scores_rows_with_that_runs_model(classify_run: Path, tmp_path: Path) -> None:
    from tunesmith.pipeline.trained import TrainedRun

    path, _labels, _ = sst2_slice(tmp_path, 40, 0.10)
    audit_args = ("data", "audit", str(path), "--run", str(classify_run), "--json", "--clusters", "2")
    result = run_cli_in_process(*audit_args, "--no-stack")  # the run's own probabilities, as they are
    assert result.returncode == 0, result.stderr
    issues = json.loads(result.stdout)["label_issues"]
    assert issues["scorer"] == "run" and str(classify_run) in issues["method"] and "stacked" not in issues["method"]
    # dev rows, and the run trained on training rows: held out, and the report says so
    assert (
        issues["out_of_fold"] is True and "held out: none of these rows is among its training rows" in issues["method"]
    )

    run = TrainedRun.from_dir(classify_run)
    model, tokenizer = run.load_tuned()
    assert run.recipe.predict_texts is not None
    texts = [json.loads(line)["text"] for line in path.read_text().splitlines()]
    own = run.recipe.predict_texts(model, tokenizer, texts, run.config)
    names = {"0": "negative", "1": "positive"}
    for row in issues["rows"]:  # the probabilities the run itself gives each flagged row's label
        assert row["p_given"] == pytest.approx(own[row["index"]]["probabilities"][names[row["label"]]], abs=1e-3)
    assert issues["oof_accuracy"] == pytest.approx(
        np.mean([o["prediction"] == names[y] for o, y in zip(own, _labels, strict=True)]), abs=1e-6
    )

    stacked = run_cli_in_process(*audit_args)  # by default refit on the file's own labels, k-fold
    assert stacked.returncode == 0, stacked.stderr
    refit = json.loads(stacked.stdout)["label_issues"]
    assert refit["scorer"] == "run" and refit["out_of_fold"] is True
    assert "held out: none of these rows" in refit["method"] and "stacked: a logistic regression" in refit["method"]
    assert refit["scorer_model"].endswith("stacked with minilm-l6")


def test_audit_with_several_runs_uses_them_together(classify_run: Path, tmp_path: Path) -> None:
    """Two runs: --no-stack averages their probabilities; the default stacks both runs' log-probabilities."""
    from tunesmith.pipeline.trained import TrainedRun

    other = train_classify_run(tmp_path / "other", seed=7)
    path, _, _ = sst2_slice(tmp_path, 40, 0.10)
    both = ("data", "audit", str(path), "--run", str(classify_run), "--run", str(other), "--json", "--clusters", "2")
    averaged = run_cli_in_process(*both, "--no-stack")
    assert averaged.returncode == 0, averaged.stderr
    issues = json.loads(averaged.stdout)["label_issues"]
    assert (
        issues["method"].startswith(f"(1) the trained run {classify_run}")
        and f"(2) the trained run {other}" in (issues["method"])
    )
    assert "their probabilities averaged" in issues["method"] and issues["out_of_fold"] is True

    texts = [json.loads(line)["text"] for line in path.read_text().splitlines()]
    names = {"0": "negative", "1": "positive"}
    own = []
    for folder in (classify_run, other):
        run = TrainedRun.from_dir(folder)
        model, tokenizer = run.load_tuned()
        assert run.recipe.predict_texts is not None
        own.append(run.recipe.predict_texts(model, tokenizer, texts, run.config))
    assert issues["rows"]
    for row in issues["rows"]:
        mean = np.mean([o[row["index"]]["probabilities"][names[row["label"]]] for o in own])
        assert row["p_given"] == pytest.approx(mean, abs=1e-3)

    stacked = run_cli_in_process(*both)
    assert stacked.returncode == 0, stacked.stderr
    refit = json.loads(stacked.stdout)["label_issues"]
    assert "stacked: a logistic regression on their log-probabilities and minilm-l6 embeddings" in refit["method"]
    assert refit["scorer_model"].count("(classify, full) from") == 2


def test_audit_with_run_says_when_it_trained_on_the_audited_rows(classify_run: Path, tmp_path: Path) -> None:
    trained = [json.loads(line) for line in (classify_run / "data" / "train.jsonl").read_text().splitlines()][:20]
    names = {"negative": "0", "positive": "1"}
    path = tmp_path / "seen.jsonl"
    path.write_text("".join(json.dumps({"text": r["text"], "label": names[r["label"]]}) + "\n" for r in trained))
    result = run_cli_in_process("data", "audit", str(path), "--run", str(classify_run), "--clusters", "2")
    assert result.returncode == 0, result.stderr
    assert "scorer run: not held-out accuracy" in result.stdout
    saved = run_cli_in_process("data", "audit", str(path), "--run", str(classify_run), "--json", "--clusters", "2")
    issues = json.loads(saved.stdout)["label_issues"]
    assert (
        issues["out_of_fold"] is False
        and "NOT held out: 20 of these rows are among its training rows" in (issues["method"])
    )


def test_audit_with_run_refuses_files_with_other_labels(classify_run: Path, tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    rows = [{"text": f"a film {i}", "label": ["good", "bad"][i % 2]} for i in range(8)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = run_cli_in_process("data", "audit", str(path), "--run", str(classify_run), "--clusters", "2")
    assert result.returncode == 2
    message = result.stdout + result.stderr
    assert "label 'bad' is not one of the run's classes (negative, positive)" in message and "Traceback" not in message


def test_audit_with_run_names_a_missing_run_or_a_task_without_classes(tmp_path: Path) -> None:
    path, _, _ = sst2_slice(tmp_path, 12, 0.0)
    missing = run_cli_in_process("data", "audit", str(path), "--run", str(tmp_path / "runs" / "nope"))
    assert missing.returncode == 2
    assert "not a run directory (no config.yaml)" in missing.stdout + missing.stderr

    run_dir = RunDir(tmp_path / "sft-run")  # an sft run without label words: a trained model, but no classes
    run_dir.root.mkdir()
    config = yaml.safe_load(load_config(write_tiny_config(tmp_path, tmp_path)).to_yaml())
    del config["data"]["label_names"]
    run_dir.config.write_text(yaml.safe_dump(config), encoding="utf-8")
    run_dir.model.mkdir()
    run_dir.mark_done("train")
    wrong = run_cli_in_process("data", "audit", str(path), "--run", str(run_dir.root))
    assert wrong.returncode == 2
    message = wrong.stdout + wrong.stderr
    assert "this sft run has no data.label_names, so it has no label words to score" in message
    assert "Traceback" not in message


def test_an_unknown_scorer_is_one_clear_error(tmp_path: Path) -> None:
    path, _, _ = sst2_slice(tmp_path, 12, 0.0)
    result = run_cli_in_process("data", "audit", str(path), "--scorer", "bert")
    assert result.returncode == 2
    assert "--scorer 'bert': expected one of embeddings, finetune" in result.stdout + result.stderr
