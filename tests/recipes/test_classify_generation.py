"""Classification as generation: predictions constrained to the label set by each whole label answer's likelihood,
trained like sft on the label word, evaluated base (zero-shot) vs tuned through the real CLI; and sampling options
of `tunesmith predict` for chat runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers.cli import run_cli
from tests.helpers.configs import write_tiny_config
from tests.helpers.paths import SST2
from tunesmith.core.config import validate_config
from tunesmith.data.records import Labeled
from tunesmith.recipes import classify_generation

# A multi-token label whose first token is also another label's: first-token scoring could not tell them apart.
LABEL_NAMES = {0: "negative", 1: "negative not"}
PROMPT = "Sentiment of: {text}"


def _config(model_dir: Path) -> object:
    return validate_config(
        {
            "model": {"name": str(model_dir)},
            "data": {"train": "unused.tsv", "label_names": LABEL_NAMES},
            "task": {"name": "classify", "classify": {"head": "generation", "prompt": PROMPT}},
            "eval": {"enabled": False, "batch_size": 3},
        }
    )


@torch.no_grad()
def _answer_log_likelihood(model: object, tokenizer: object, text: str, label: str) -> float:
    """log p(label + end of turn | prompt), one example at a time from the full logits: the reference."""
    messages = [{"role": "user", "content": PROMPT.format(text=text)}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": label}], tokenize=False)
    full = full.rstrip()  # the end-of-turn token ends the answer; the template's trailing newline is not scored
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    assert ids[: len(prompt_ids)] == prompt_ids
    logp = model(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
    return sum(float(logp[i - 1, ids[i]]) for i in range(len(prompt_ids), len(ids)))


def test_predictions_compare_whole_label_answers(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = _config(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    texts = ["a gorgeous , witty , seductive movie .", "dull", "the acting is good enough"]
    records = [Labeled(t, "") for t in texts]
    predictions = classify_generation.predict_records(model, tokenizer, records, cfg, "test")
    labels = list(LABEL_NAMES.values())
    assert len(tokenizer.encode(labels[1], add_special_tokens=False)) > 1
    for text, prediction in zip(texts, predictions, strict=True):
        scores = torch.tensor([_answer_log_likelihood(model, tokenizer, text, label) for label in labels])
        expected = scores.softmax(-1).tolist()
        got = [prediction["probabilities"][label] for label in labels]
        assert got == pytest.approx(expected, abs=1e-5)
        assert prediction["prediction"] == labels[int(scores.argmax())]


def test_cli_run_scores_base_and_tuned_on_the_label_set(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = write_tiny_config(
        tmp_path,
        tiny_model_dir,
        data={"prompt_template": None, "completion_template": "{completion}", "train_rows": 64, "test_rows": 24},
        task={"name": "classify", "classify": {"head": "generation", "prompt": PROMPT}},
        training={"max_steps": 8, "batch_size": 8, "learning_rate": 1e-2, "scheduler": "constant"},
        eval={"batch_size": 8, "bootstrap_samples": 100},
    )
    result = run_cli("run", str(config))
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "runs" / "tiny"
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert set(metrics) == {"base", "tuned"}  # a chat model answers zero-shot: the base model is compared
    for side in metrics.values():
        assert side["invalid_rate"] == 0.0  # every answer is one of the labels
        assert 0.0 <= side["roc_auc"] <= 1.0 and 0.0 <= side["ece"] <= 1.0
    analysis = json.loads((run_dir / "eval" / "analysis.json").read_text())
    assert analysis["compared_with"] == "base" and "errors" in analysis["tuned"]
    rows = [json.loads(line) for line in (run_dir / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 24 and all(r["tuned"]["prediction"] in ("negative", "positive") for r in rows)
    # Trained like sft on the label word and its end of turn: the loss on those tokens falls.
    losses = [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0] - 0.5


def test_predict_samples_when_asked_and_repeats_with_a_seed(tuned_run_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "rows.jsonl"
    lines = (SST2 / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:31]
    source.write_text("".join(json.dumps({"sentence": line.split("\t")[0]}) + "\n" for line in lines))

    def predict(name: str, *options: str) -> list[str]:
        out = tmp_path / f"{name}.jsonl"
        result = run_cli("predict", str(tuned_run_dir), "--input", str(source), "--output", str(out), *options)
        assert result.returncode == 0, result.stderr
        return [json.loads(line)["prediction"] for line in out.read_text().splitlines()]

    hot = ("--temperature", "3.0", "--top-p", "1.0", "--max-new-tokens", "4", "--batch-size", "8")
    first, second = predict("a", *hot, "--seed", "7"), predict("b", *hot, "--seed", "7")
    assert first == second  # same seed, same samples
    # Greedy answers (the default, as in the run's evaluation of the same first rows) differ from hot samples.
    evaluated = [
        json.loads(x)["tuned"] for x in (tuned_run_dir / "eval" / "predictions.jsonl").read_text().splitlines()
    ]
    assert first[: len(evaluated)] != evaluated
