"""`tunesmith data annotate`: label-word likelihoods, people's labels kept, bad input reported with file and line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.helpers.cli import run_cli, run_cli_in_process
from tests.helpers.paths import SST2
from tunesmith.data.labelfile import LabelSet, read_label_file

SST2_FILE = SST2 / "dev.tsv"


def jsonl(path: Path, rows: list) -> Path:
    """One JSON object per line; a string is written as it is (a broken row)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_word_loglik_batched_equals_one_sequence_at_a_time(tiny_model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.curate.annotate import word_loglik

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    prompts = ["Review: great fun\nLabel:", "Review: a long, slow and tedious film that goes nowhere\nLabel:", "x"]
    words = ["positive", "negative", "so-so"]
    batched = word_loglik(model, tokenizer, prompts, words, batch_size=2)
    expected = np.zeros_like(batched)
    with torch.no_grad():
        for p, prompt in enumerate(prompts):
            for w, word in enumerate(words):
                head = tokenizer.encode(prompt, add_special_tokens=False)
                tail = tokenizer.encode(word, add_special_tokens=False)
                logprobs = model(torch.tensor([head + tail])).logits[0].log_softmax(-1)
                expected[p, w] = sum(float(logprobs[len(head) - 1 + i, t]) for i, t in enumerate(tail))
    np.testing.assert_allclose(batched, expected, atol=1e-4)
    assert len({len(tokenizer.encode(w, add_special_tokens=False)) for w in words}) > 1  # multi-token words covered


def test_annotate_labels_unlabelled_rows_and_never_touches_a_persons_label(tiny_model_dir: Path, tmp_path: Path):
    data = jsonl(
        tmp_path / "reviews.jsonl",
        [
            {"text": "a gorgeous, witty film", "label": "positive"},
            {"text": "two hours of nothing", "label": "positive", "annotator": "ann"},  # a person's (odd) label
            {"text": "flat and lifeless", "label": "negative", "label_source": "model", "confidence": 0.6},
            {"text": "an unexpected delight"},
            {"text": "i fell asleep", "label": ""},
            '{"text": "broken row", ',
            {"text": "the actors try hard", "label": "mixed"},  # a person's label outside the label set
            {"review": "no text field here", "label": None},
        ],
    )
    out = tmp_path / "labelled.jsonl"
    result = run_cli("data", "annotate", str(data), "--labels", "positive,negative", "--model", str(tiny_model_dir),
                     "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = rows_of(out)
    # People's labels, even one outside the label set, are exactly as they were.
    assert rows[0] == {"text": "a gorgeous, witty film", "label": "positive"}
    assert rows[1] == {"text": "two hours of nothing", "label": "positive", "annotator": "ann"}
    assert rows[5] == {"text": "the actors try hard", "label": "mixed"}
    # The model labels the rest: a label of the set, its probability, and who set it.
    assert [r["text"] for r in rows[2:5]] == ["flat and lifeless", "an unexpected delight", "i fell asleep"]
    for row in rows[2:5]:
        assert row["label"] in ("positive", "negative") and row["label_source"] == "model"
        assert 0.5 <= row["confidence"] <= 1.0
    assert len(rows) == 6  # the two unreadable rows are reported, not written
    assert f"{data}:6" in result.stdout and "malformed JSON" in result.stdout
    assert f"{data}:8" in result.stdout and "field 'text'" in result.stdout
    assert f"{data}:7: label 'mixed'" in result.stdout and "outside the label set" in result.stdout
    assert "2 rows could not be read" in result.stdout and "kept 3 labels set by a person" in result.stdout
    assert json.loads(data.read_text().splitlines()[0]) == {"text": "a gorgeous, witty film", "label": "positive"}


def test_file_without_a_text_column_is_refused_before_loading_a_model(tmp_path: Path) -> None:
    data = jsonl(tmp_path / "reviews.jsonl", [{"review": "good", "label": "positive"}, {"review": "bad"}])
    out = tmp_path / "out.jsonl"
    result = run_cli_in_process("data", "annotate", str(data), "--labels", "positive,negative", "--out", str(out))
    assert result.returncode == 2
    message = result.stdout + result.stderr
    assert str(data) in message and "no text column" in message and "review, label" in message
    assert "--text-column" in message and not out.exists()


def test_label_set_and_output_format_are_checked(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="at least two labels"):
        LabelSet.parse("positive")
    with pytest.raises(Exception, match="listed twice"):
        LabelSet.parse("a,b,a")
    labels = LabelSet.parse("0=negative, 1=positive")
    assert (labels.values, labels.words, labels.word("1")) == (("0", "1"), ("negative", "positive"), "positive")
    data = jsonl(tmp_path / "r.jsonl", [{"text": "fine"}, {"text": "ok"}])
    result = run_cli_in_process(
        "data", "annotate", str(data), "--labels", "a,b", "--out", str(tmp_path / "out.parquet")
    )
    assert result.returncode == 2 and "not '.parquet'" in result.stdout + result.stderr


def test_a_trained_sft_run_annotates_with_its_own_prompt_and_labels(tuned_run_dir: Path, tmp_path: Path) -> None:
    rows = (SST2 / "dev.tsv").read_text(encoding="utf-8").splitlines()
    data = tmp_path / "dev.tsv"
    data.write_text("\n".join([rows[0], *[r.rsplit("\t", 1)[0] + "\t" for r in rows[1:9]], *rows[9:13]]) + "\n")
    out = tmp_path / "labelled.tsv"
    result = run_cli("data", "annotate", str(data), "--model", str(tuned_run_dir), "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["labelled_by_model"], summary["kept_human_labels"]) == (8, 4)
    labelled = read_label_file(out)
    assert labelled.text_column == "sentence"
    assert {i.label("label") for i in labelled.items[:8]} <= {"0", "1"}  # the run's label_names keys
    assert [i.values["label"] for i in labelled.items[8:]] == [r.rsplit("\t", 1)[1] for r in rows[9:13]]

    other = tmp_path / "tagger"
    shutil.copytree(tuned_run_dir, other)
    config = yaml.safe_load((other / "config.yaml").read_text())
    config["task"]["name"] = "lm"
    (other / "config.yaml").write_text(yaml.safe_dump(config))
    result = run_cli("data", "annotate", str(data), "--model", str(other), "--labels", "0,1", "--out", str(out))
    assert result.returncode == 2
    assert "a 'lm' run cannot pre-label rows" in result.stdout + result.stderr


@pytest.mark.slow
def test_smollm2_prelabels_sst2_better_than_chance_and_keeps_human_labels(smollm2_dir: Path, tmp_path: Path) -> None:
    from scipy.stats import binomtest

    lines = SST2_FILE.read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], lines[1:81]
    gold = [r.rsplit("\t", 1)[1] for r in rows]
    # 20 rows keep a person's label, 5 of them deliberately wrong (a model would "correct" them if it overwrote).
    human = [r if i >= 5 else r.rsplit("\t", 1)[0] + "\t" + str(1 - int(gold[i])) for i, r in enumerate(rows[:20])]
    blank = [r.rsplit("\t", 1)[0] + "\t" for r in rows[20:]]
    data = tmp_path / "dev.tsv"
    data.write_text("\n".join([header, *human, *blank]) + "\n", encoding="utf-8")
    out = tmp_path / "labelled.jsonl"
    result = run_cli("data", "annotate", str(data), "--labels", "0=negative,1=positive", "--model", "smollm2-135m",
                     "--out", str(out), "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    labelled = rows_of(out)
    assert [r["label"] for r in labelled[:20]] == [h.rsplit("\t", 1)[1] for h in human]
    assert all("label_source" not in r for r in labelled[:20])
    predicted = [r["label"] for r in labelled[20:]]
    assert all(r["label_source"] == "model" for r in labelled[20:])
    correct = sum(p == g for p, g in zip(predicted, gold[20:], strict=True))
    test = binomtest(correct, len(predicted), 0.5, alternative="greater")
    print(f"smollm2-135m zero-shot on 60 SST-2 dev rows: accuracy {correct / 60:.3f}, p={test.pvalue:.4f}")
    assert correct / len(predicted) > 0.5 and test.pvalue < 0.05


def test_few_shot_examples_come_from_each_label_in_turn_and_only_from_people(tmp_path: Path) -> None:
    from tunesmith.curate.annotate import pick_shots

    rows = [{"text": f"good {i}", "label": "pos"} for i in range(5)] + [
        {"text": f"bad {i}", "label": "neg"} for i in range(2)
    ]
    rows += [{"text": "model said so", "label": "pos", "label_source": "model"}, {"text": "no label"}]
    data = read_label_file(jsonl(tmp_path / "d.jsonl", rows))
    labels = LabelSet.parse("pos,neg")
    shots = pick_shots(data, labels, 4, seed=0)
    assert sorted(word for _, word in shots) == ["neg", "neg", "pos", "pos"]
    assert all(text.startswith(("good", "bad")) for text, _ in shots)  # never a model's label or an unlabelled row
    assert pick_shots(data, labels, 4, seed=0) == shots  # seeded
    assert len(pick_shots(data, labels, 7, seed=0)) == 7
    with pytest.raises(Exception, match="--shots 8 needs 8 rows labelled by a person"):
        pick_shots(data, labels, 8, seed=0)
