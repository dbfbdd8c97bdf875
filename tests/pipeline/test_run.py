"""End-to-end runs through the real CLI on real SST-2 rows with a tiny model; bad input is explained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from peft import PeftModel
from transformers import AutoModelForCausalLM

from tests.helpers.cli import run_cli, run_cli_in_process
from tests.helpers.configs import write_tiny_config
from tunesmith.pipeline.run import Run


def test_run_prepares_trains_evaluates_and_saves(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = write_tiny_config(tmp_path, tiny_model_dir)
    result = run_cli("run", str(config))
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "runs" / "tiny"
    assert {"config.yaml", "state.json", "data", "model", "metrics.jsonl", "eval"} <= {
        p.name for p in run_dir.iterdir()
    }
    assert (run_dir / "model" / "adapter_config.json").is_file()
    assert (run_dir / "model" / "adapter_model.safetensors").is_file()
    assert not list((run_dir / "model").glob("*.bin")) and not list((run_dir / "model").glob("*.pt"))
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert set(metrics) == {"base", "tuned"}
    assert {"accuracy", "macro_f1", "invalid_rate"} <= set(metrics["tuned"])
    predictions = [json.loads(line) for line in (run_dir / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 12
    assert {"input", "reference", "base", "tuned"} <= set(predictions[0])
    assert predictions[0]["reference"] in ("positive", "negative")
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 3
    assert "accuracy" in result.stdout and "95% CI" in result.stdout  # the result table
    comparison = json.loads((run_dir / "eval" / "comparison.json").read_text())
    assert comparison["accuracy"]["test"] == "mcnemar"
    low, high = comparison["accuracy"]["ci95"]
    assert low <= comparison["accuracy"]["delta"] <= high
    analysis = json.loads((run_dir / "eval" / "analysis.json").read_text())
    assert sum(map(sum, analysis["tuned"]["details"]["confusion_matrix"]["matrix"])) == 12
    assert analysis["forgetting"]["rows"] == 24 and analysis["forgetting"]["base_perplexity"] > 1
    assert set(json.loads((run_dir / "eval" / "baselines.json").read_text())) == {"base_3_shot", "majority_class"}
    assert "forgetting: perplexity on general chat" in result.stdout
    state = json.loads((run_dir / "state.json").read_text())
    assert list(state["stages"]) == ["prepare", "train", "evaluate", "report"]
    assert (run_dir / "report.html").is_file()

    again = run_cli("run", str(config))
    assert again.returncode == 0 and "already complete" in again.stderr

    changed = run_cli("run", str(config), "--set", "training.learning_rate=1e-3")
    assert changed.returncode == 2 and "training.learning_rate" in changed.stderr and "--force" in changed.stderr

    forced = run_cli("run", str(config), "--set", "training.learning_rate=1e-3", "--force")
    assert forced.returncode == 0, forced.stderr
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["training"]["learning_rate"] == 1e-3


def test_saved_adapter_loads_in_plain_peft_with_the_same_logits(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = write_tiny_config(
        tmp_path, tiny_model_dir, training={"learning_rate": 1e-2, "max_steps": 4}, eval={"enabled": False}
    )
    run = Run.from_file(config)
    run.open()
    run.prepare()
    trained = run.train().eval()
    ids = torch.tensor([[5, 17, 42, 99, 3, 250]])
    with torch.no_grad():
        ours = trained(input_ids=ids).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        base_logits = base(input_ids=ids).logits
        loaded = PeftModel.from_pretrained(base, str(run.dir.model)).eval()
        theirs = loaded(input_ids=ids).logits
    assert (ours - base_logits).abs().max() > 1e-3  # the adapter changed the model
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_full_fine_tuning_saves_a_plain_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = write_tiny_config(tmp_path, tiny_model_dir, method={"name": "full"}, training={"max_steps": 2})
    result = run_cli("run", str(config))
    assert result.returncode == 0, result.stderr
    model_dir = tmp_path / "runs" / "tiny" / "model"
    assert (model_dir / "model.safetensors").is_file() and (model_dir / "tokenizer.json").is_file()
    assert AutoModelForCausalLM.from_pretrained(model_dir).config.num_hidden_layers == 2


def _fails_cleanly(result, *needles: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr


def _nothing_claims_completion(tmp_path: Path) -> None:
    state = tmp_path / "runs" / "tiny" / "state.json"
    stages = json.loads(state.read_text())["stages"] if state.exists() else {}
    assert "train" not in stages and "evaluate" not in stages
    assert not (tmp_path / "runs" / "tiny" / "model").exists()


def test_missing_data_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = write_tiny_config(tmp_path, tiny_model_dir, data={"train": str(tmp_path / "absent.tsv")})
    _fails_cleanly(run_cli_in_process("run", str(config)), "data file not found", "absent.tsv", "fix:")
    _nothing_claims_completion(tmp_path)


def test_empty_data_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    config = write_tiny_config(tmp_path, tiny_model_dir, data={"train": str(empty)})
    _fails_cleanly(run_cli_in_process("run", str(config)), "empty.jsonl", "the file is empty")
    _nothing_claims_completion(tmp_path)


def test_unknown_model_alias(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = write_tiny_config(tmp_path, tiny_model_dir, model={"name": "smollm-135m"})
    _fails_cleanly(
        run_cli("run", str(config)),
        "model 'smollm-135m' not found",
        "HF_HUB_OFFLINE=1",
        "did you mean the alias 'smollm2-135m'?",
    )
    _nothing_claims_completion(tmp_path)
    assert not (tmp_path / "runs" / "tiny" / "data").exists()  # failed before preparing data


def test_config_key_typo(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = write_tiny_config(tmp_path, tiny_model_dir, training={"epoch": 2})
    _fails_cleanly(
        run_cli_in_process("run", str(config)), "training.epoch: unknown key; did you mean 'training.epochs'?"
    )
    assert not (tmp_path / "runs").exists()  # failed before any work


def test_data_column_that_is_not_there(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = write_tiny_config(tmp_path, tiny_model_dir, data={"prompt_template": "Review: {review}"})
    _fails_cleanly(run_cli_in_process("run", str(config)), "column 'review' is not in the file", "sentence, label")
    _nothing_claims_completion(tmp_path)


def test_bad_rows_are_rejected_with_reasons_and_kept(tiny_model_dir: Path, tmp_path: Path) -> None:
    rows = [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "positive"}]},
        {"messages": [{"role": "user", "content": "only a question"}]},
        {"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "negative"}]},
    ]
    data = tmp_path / "chat.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n")
    config = write_tiny_config(
        tmp_path,
        tiny_model_dir,
        data={
            "train": str(data),
            "test": str(data),
            "prompt_template": None,
            "completion_template": "{completion}",
            "label_names": {},
            "train_rows": None,
            "test_rows": None,
        },
    )
    run = Run.from_file(config)
    run.open()
    run.prepare()
    rejects = [json.loads(line) for line in (run.dir.data / "rejects.jsonl").read_text().splitlines()]
    reasons = {r["source"].rsplit(":", 1)[1]: r["reason"] for r in rejects if r["source"].startswith(str(data))}
    assert reasons["2"] == "field 'messages': no assistant message to learn from"
    assert reasons["3"].startswith("field 'messages[0]'.role: expected one of system, user, assistant")
    assert reasons["4"].startswith("malformed JSON")
    report = json.loads((run.dir.data / "report.json").read_text())
    assert report["rows"]["train"] == 1 and report["rejected"] == 6  # 3 bad rows, in train and test


@pytest.mark.slow
def test_quickstart_at_reduced_size_beats_the_base_model(tmp_path: Path) -> None:
    """The real quickstart config on SmolLM2-135M, smaller: the tuned model must beat zero-shot base."""
    from tests.helpers.paths import REPO

    result = run_cli(
        "run",
        str(REPO / "examples" / "quickstart.yaml"),
        "--set",
        "data.train_rows=96",
        "--set",
        "data.test_rows=60",
        "--set",
        f"output.dir={tmp_path}",
        timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "quickstart" / "eval" / "metrics.json").read_text())
    assert metrics["tuned"]["accuracy"] > metrics["base"]["accuracy"]
    assert metrics["tuned"]["invalid_rate"] < 0.05


def test_eval_on_another_file_and_split(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = write_tiny_config(
        tmp_path, tiny_model_dir, data={"validation_fraction": 0.25},
        eval={"max_new_tokens": 3, "batch_size": 6, "few_shot": 0, "forgetting": False, "bias_probe": False},
    )  # fmt: skip
    assert run_cli("run", str(config)).returncode == 0
    run_dir = tmp_path / "runs" / "tiny"
    extra = tmp_path / "extra.tsv"
    extra.write_text("sentence\tlabel\na fine film\t1\na dull film\t0\nbroken row\t7\n")
    result = run_cli("eval", str(run_dir), "--data", str(extra))
    assert result.returncode == 0, result.stderr
    metrics = json.loads((run_dir / "eval-extra" / "metrics.json").read_text())
    assert set(metrics) == {"base", "tuned"}
    assert len((run_dir / "eval-extra" / "predictions.jsonl").read_text().splitlines()) == 2
    rejects = [json.loads(line) for line in (run_dir / "eval-extra" / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == 1 and rejects[0]["source"].endswith("extra.tsv:4")
    result = run_cli("eval", str(config), "--split", "validation")
    assert result.returncode == 0, result.stderr
    assert (run_dir / "eval-validation" / "metrics.json").is_file()
