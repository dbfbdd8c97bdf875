"""`tunesmith export --onnx` and `tunesmith predict --backend onnx`: the graph run by onnxruntime answers as the
run's PyTorch model does (classify head on a tiny BERT, LoRA chat run on a tiny llama), and what cannot be exported
is refused."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
import yaml
from transformers import AutoConfig, AutoTokenizer

from tests.helpers.cli import run_cli, run_cli_in_process
from tests.helpers.models import build_classify_bert
from tests.helpers.paths import REPO, SST2

TREC = REPO.parent / "shared" / "datasets" / "trec"
QUESTIONS = ["Who wrote Hamlet ?", "Where is the Eiffel Tower ?", "How many legs does a spider have ?"]


@pytest.fixture(scope="module")
def classify_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT with a TREC-6 head, a few full fine-tuning steps (no evaluation: parity is the point here)."""
    from tunesmith.pipeline.run import Run

    folder = tmp_path_factory.mktemp("onnx-classify")
    config = {
        "model": {"name": str(build_classify_bert(folder / "bert"))},
        "data": {"train": str(TREC / "train_5500.label"), "test": str(TREC / "TREC_10.label"), "train_rows": 200},
        "task": {"name": "classify", "classify": {"label_separator": ":"}},
        "method": {"name": "full"},
        "training": {"max_steps": 8, "batch_size": 16, "learning_rate": 3e-3, "max_seq_len": 16},
        "eval": {"enabled": False, "batch_size": 8},
        "output": {"dir": str(folder / "runs"), "name": "trec"},
    }
    path = folder / "trec.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    run = Run.from_file(path)
    run.run()
    return run.dir.root


@pytest.fixture(scope="module")
def classify_export(classify_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("onnx-classify-export") / "export"
    result = run_cli("export", str(classify_run), "--out", str(out), "--onnx")
    assert result.returncode == 0, result.stderr
    return out, result.stderr


def _fails_cleanly(result, *needles: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _torch_predictions(run_dir: Path, source: Path, folder: Path) -> list[dict]:
    """What `tunesmith predict RUN` (the PyTorch backend) writes, called in this process: one start-up less."""
    from tunesmith.pipeline.trained import TrainedRun
    from tunesmith.ship.predict import predict_file

    run = TrainedRun.from_dir(run_dir)
    out = folder / "torch.jsonl"
    predict_file(run, source, out, run.config.eval.batch_size, run.config.eval.max_new_tokens)
    return _lines(out)


def test_classify_onnx_runs_in_plain_onnxruntime_like_the_run(
    classify_run: Path, classify_export: tuple[Path, str]
) -> None:
    from tunesmith.pipeline.trained import TrainedRun

    out, stderr = classify_export
    assert "onnxruntime vs PyTorch max |logit difference|" in stderr
    checks = json.loads((out / "export.json").read_text())["checks"]["onnx"]
    assert checks["file"] == "onnx/model.onnx" and checks["same_argmax"]
    assert checks["max_logit_diff"] <= checks["allowed"] and checks["logit_scale"] > 0.1
    assert checks["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]

    # What a user does with the folder: its tokenizer, its config's labels, a bare onnxruntime session.
    folder = out / "onnx"
    labels = AutoConfig.from_pretrained(folder).id2label
    assert set(labels.values()) == {"ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"}
    encoded = AutoTokenizer.from_pretrained(folder)(QUESTIONS, padding=True, return_tensors="np")
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {k: v.astype(np.int64) for k, v in encoded.items()})
    model, _ = TrainedRun.from_dir(classify_run).load_tuned()
    with torch.no_grad():
        expected = model(**{k: torch.from_numpy(v) for k, v in encoded.items()}).logits.numpy()
    assert np.abs(logits - expected).max() < 1e-4
    assert (logits.argmax(-1) == expected.argmax(-1)).all()
    assert np.ptp(expected, axis=0).max() > 1e-3  # the questions get different logits: the comparison has teeth


def test_predict_backend_onnx_on_a_classify_run_gives_the_torch_predictions(classify_run: Path, tmp_path: Path) -> None:
    lines = (TREC / "TREC_10.label").read_text(encoding="latin-1").splitlines()[:24]
    source = tmp_path / "questions.jsonl"
    source.write_text("".join(json.dumps({"text": line.split(" ", 1)[1]}) + "\n" for line in lines))
    onnx_out = tmp_path / "onnx.jsonl"
    result = run_cli(
        "predict", str(classify_run), "--backend", "onnx", "--input", str(source), "--output", str(onnx_out)
    )
    assert result.returncode == 0, result.stderr
    torch_rows, onnx_rows = _torch_predictions(classify_run, source, tmp_path), _lines(onnx_out)
    assert len(onnx_rows) == 24
    assert [r["prediction"] for r in onnx_rows] == [r["prediction"] for r in torch_rows]
    for a, b in zip(onnx_rows, torch_rows, strict=True):
        assert a["probabilities"].keys() == b["probabilities"].keys()
        assert max(abs(a["probabilities"][k] - b["probabilities"][k]) for k in a["probabilities"]) < 1e-5
    assert len({r["prediction"] for r in torch_rows}) > 1 or len({r["confidence"] for r in torch_rows}) > 1


def test_chat_run_onnx_export_generates_the_torch_tokens(tuned_run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    result = run_cli("export", str(tuned_run_dir), "--out", str(out), "--onnx")
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "export.json").read_text())
    checks = summary["checks"]["onnx"]
    assert summary["kind"] == "adapter" and (out / "adapter_model.safetensors").is_file()  # the HF export, beside
    assert checks["same_argmax"] and checks["same_greedy_tokens"] and checks["greedy_prompts"] == 2
    assert checks["max_logit_diff"] <= checks["allowed"] and not checks["kv_cache"]
    assert "position_ids" in checks["inputs"]

    # predict from the export alone (the run moved away) against the PyTorch backend on the run
    rows = (SST2 / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:7]
    source = tmp_path / "rows.csv"
    with source.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sentence", "label"])
        writer.writerows(line.split("\t") for line in rows)
    moved = shutil.move(str(out), tmp_path / "elsewhere")
    onnx_out = tmp_path / "onnx.jsonl"
    result = run_cli("predict", str(moved), "--backend", "onnx", "--input", str(source), "--output", str(onnx_out))
    assert result.returncode == 0, result.stderr
    predictions = [r["prediction"] for r in _lines(onnx_out)]
    assert predictions == [r["prediction"] for r in _torch_predictions(tuned_run_dir, source, tmp_path)]
    assert set(predictions) <= {"positive", "negative"}  # replies stopped at the end of turn, as torch's do


def _edited_copy(run_dir: Path, folder: Path, **changes: dict) -> Path:
    copy = folder / run_dir.name
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("model"))
    (copy / "model").symlink_to(run_dir / "model")
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config.update(changes)  # whole sections replaced
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    return copy


def test_what_onnx_cannot_express_is_refused(classify_run: Path, tmp_path: Path) -> None:
    prefix = _edited_copy(classify_run, tmp_path / "a", method={"name": "prefix"})
    result = run_cli_in_process("export", str(prefix), "--out", str(tmp_path / "x"), "--onnx")
    _fails_cleanly(result, "cannot export to ONNX", "method 'prefix'", "virtual tokens")
    assert not (tmp_path / "x").exists()

    reward = _edited_copy(classify_run, tmp_path / "b", task={"name": "reward"})
    result = run_cli_in_process("export", str(reward), "--out", str(tmp_path / "y"), "--onnx")
    _fails_cleanly(result, "cannot export to ONNX", "classify and tag runs", "'reward' run")

    result = run_cli_in_process(
        "predict", str(classify_run), "--backend", "onnx", "--temperature", "0.7", "--input", "a", "--output", "b"
    )
    _fails_cleanly(result, "the onnx backend decodes greedily")


def test_a_failed_parity_check_refuses_the_export_with_its_figures(
    classify_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tunesmith.core.errors import TunesmithError
    from tunesmith.pipeline.trained import TrainedRun
    from tunesmith.ship import onnx_export
    from tunesmith.ship.export import export_run

    monkeypatch.setattr(onnx_export, "TOLERANCE", 1e-12)  # no fp32 graph is that close: the check must fire
    with pytest.raises(TunesmithError, match=r"disagrees .* max \|logit difference\| \S+ > allowed 1e-12"):
        export_run(TrainedRun.from_dir(classify_run), tmp_path / "out", onnx=True)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_tag_run_onnx_export_matches_pytorch_per_token(tmp_path: Path) -> None:
    from tests.helpers.configs import write_tag_config
    from tests.helpers.models import build_token_bert
    from tunesmith.pipeline.run import Run
    from tunesmith.ship.export import export_run

    model_dir = build_token_bert(tmp_path / "bert")
    config = write_tag_config(tmp_path, model_dir, training={"max_steps": 4}, eval={"enabled": False})
    run = Run.from_file(config)
    run.run()
    result = export_run(run, tmp_path / "export", onnx=True)
    checks = result.checks["onnx"]
    assert checks["same_argmax"] and checks["max_logit_diff"] <= checks["allowed"]
    assert (tmp_path / "export" / "model.safetensors").is_file()  # the Hugging Face folder, with onnx/ inside
    assert "B-" in "".join(AutoConfig.from_pretrained(tmp_path / "export" / "onnx").id2label.values())
