"""The tag (NER) recipe: sub-word alignment, entity-level metrics against seqeval, and an end-to-end CLI run."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.helpers.cli import run_cli
from tests.helpers.configs import write_tag_config
from tests.helpers.models import build_token_bert, minilm_tokenizer_dir
from tests.helpers.report import assert_report_renders
from tunesmith.core.config import validate_config
from tunesmith.data.records import Tagged
from tunesmith.metrics.tagging import per_type, tagging_metrics
from tunesmith.recipes import tag


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_token_bert(tmp_path_factory.mktemp("tiny-bert"))


# ------------------------------------------------------------------ alignment


def test_tags_sit_on_the_first_sub_token_of_each_word() -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_tokenizer_dir())
    cfg = validate_config(
        {"model": {"name": "x"}, "data": {"train": "t"}, "task": {"name": "tag"}, "eval": {"enabled": False}}
    )
    record = Tagged(
        ["Empire", "State", "Buildingzz", "=", "ESB"], ["B-location", "I-location", "I-location", "O", "B-location"]
    )
    example = tag.encode_row(record, tokenizer, cfg)
    # Hand-checked WordPiece split: [CLS] empire state building ##zz = es ##b [SEP]
    assert tokenizer.convert_ids_to_tokens(example.input_ids) == [
        "[CLS]", "empire", "state", "building", "##zz", "=", "es", "##b", "[SEP]",
    ]  # fmt: skip
    assert example.tags == [None, "B-location", "I-location", "I-location", None, "O", "B-location", None, None]
    assert example.n_targets == 5 and not example.truncated

    short = validate_config(
        {"model": {"name": "x"}, "data": {"train": "t"}, "task": {"name": "tag"}, "eval": {"enabled": False},
         "training": {"max_seq_len": 6}}
    )  # fmt: skip
    cut = tag.encode_row(record, tokenizer, short)
    assert cut.truncated and cut.n_targets == 3  # [CLS] empire state building ##zz [SEP]: ESB and '=' are cut off
    batch = tag.collate([example, cut], pad_id=0, index={"B-location": 0, "I-location": 1, "O": 2})
    assert batch["labels"].tolist() == [
        [-100, 0, 1, 1, -100, 2, 0, -100, -100],
        [-100, 0, 1, 1, -100, -100, -100, -100, -100],
    ]
    assert tag.count_targets(batch) == 8


# ------------------------------------------------------------------ metrics


def test_entity_metrics_on_a_hand_computed_case_agree_with_seqeval() -> None:
    from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score

    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG", "O", "B-LOC"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["O", "B-ORG", "O", "O", "B-PER"]]
    # gold chunks: PER(0-1), LOC(3); ORG(1-2), LOC(4). predicted: PER(0-1); ORG(1), PER(4). Only PER(0-1) is right.
    metrics = tagging_metrics(pred, gold)
    assert metrics["precision"] == pytest.approx(1 / 3)
    assert metrics["recall"] == pytest.approx(1 / 4)
    assert metrics["f1"] == pytest.approx(2 * (1 / 3) * (1 / 4) / (1 / 3 + 1 / 4))
    assert metrics["token_accuracy"] == pytest.approx(6 / 9)
    # PER: P 1/2, R 1/1, F1 2/3; LOC: 0; ORG: 0 -> macro F1 2/9
    assert metrics["macro_f1"] == pytest.approx(2 / 9)
    assert metrics["precision"] == pytest.approx(precision_score(gold, pred))
    assert metrics["recall"] == pytest.approx(recall_score(gold, pred))
    assert metrics["f1"] == pytest.approx(f1_score(gold, pred))
    assert metrics["macro_f1"] == pytest.approx(f1_score(gold, pred, average="macro"))
    assert metrics["token_accuracy"] == pytest.approx(accuracy_score(gold, pred))
    report = classification_report(gold, pred, output_dict=True, zero_division=0)
    for kind, values in per_type(pred, gold).items():
        for key in ("precision", "recall", "f1"):
            assert values[key] == pytest.approx(report[kind][f"{key}-score" if key == "f1" else key])
        assert values["support"] == report[kind]["support"]


def test_entity_metrics_agree_with_seqeval_on_random_tag_sequences() -> None:
    from seqeval.metrics import f1_score, precision_score, recall_score

    rng = random.Random(0)
    tags = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG", "B-ORG", "E-LOC", "S-PER"]
    for _ in range(20):
        gold = [[rng.choice(tags) for _ in range(rng.randint(1, 12))] for _ in range(15)]
        pred = [[rng.choice(tags) for _ in g] for g in gold]
        metrics = tagging_metrics(pred, gold)
        assert metrics["precision"] == pytest.approx(precision_score(gold, pred, zero_division=0))
        assert metrics["recall"] == pytest.approx(recall_score(gold, pred, zero_division=0))
        assert metrics["f1"] == pytest.approx(f1_score(gold, pred, zero_division=0))
        assert metrics["macro_f1"] == pytest.approx(f1_score(gold, pred, average="macro", zero_division=0))


def test_tags_that_are_no_chunk_scheme_get_token_metrics() -> None:
    gold = [["DT", "NN", "VB"], ["NN", "VB"]]
    pred = [["DT", "NN", "NN"], ["NN", "VB"]]
    metrics = tagging_metrics(pred, gold)
    assert set(metrics) == {"token_accuracy", "macro_f1"}
    assert metrics["token_accuracy"] == pytest.approx(4 / 5)


def test_label_names_rename_integer_tags() -> None:
    cfg = validate_config(
        {"model": {"name": "x"}, "data": {"train": "t", "label_names": {0: "O", 1: "B-person"}},
         "task": {"name": "tag"}, "eval": {"enabled": False}}
    )  # fmt: skip
    assert tag.convert(Tagged(["Ann", "runs"], ["1", "0"]), cfg).tags == ["B-person", "O"]
    from tunesmith.data.formats import RowError

    with pytest.raises(RowError, match=r"'7' is not in data\.label_names"):
        tag.convert(Tagged(["x"], ["7"]), cfg)


# ------------------------------------------------------------------ end to end


def test_tag_run_through_the_cli_learns_entities(tiny_bert_dir: Path, tmp_path: Path) -> None:
    config = write_tag_config(tmp_path, tiny_bert_dir)
    result = run_cli("run", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "runs" / "tag"
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    baselines = json.loads((run_dir / "eval" / "baselines.json").read_text())
    assert "base" not in metrics  # a fresh tag head has nothing to say before training
    assert baselines["all_O"]["f1"] == 0.0 and baselines["all_O"]["token_accuracy"] > 0.5
    tuned = metrics["tuned"]
    assert tuned["f1"] > 0.8, tuned  # far above the all-O baseline (F1 0)
    assert tuned["token_accuracy"] > baselines["all_O"]["token_accuracy"]
    comparison = json.loads((run_dir / "eval" / "comparison.json").read_text())
    assert comparison["f1"]["ci95"][0] > 0  # the gain over all-O is significant
    analysis = json.loads((run_dir / "eval" / "analysis.json").read_text())
    assert set(analysis["tuned"]["details"]["per_type"]) == {"location", "person"}
    config_model = json.loads((run_dir / "model" / "config.json").read_text())
    assert sorted(config_model["id2label"].values()) == ["B-location", "B-person", "I-person", "O"]
    row = json.loads((run_dir / "eval" / "predictions.jsonl").read_text().splitlines()[0])
    assert len(row["tuned"]["prediction"]) == len(row["input"].split())
    html = (run_dir / "report.html").read_text()
    assert "all O" in html and row["reference"].split(";")[0] in html
    assert_report_renders(run_dir / "report.html", tmp_path, "per-type")


def test_rows_longer_than_the_models_positions_are_rejected_before_training(tiny_bert_dir: Path) -> None:
    from tunesmith.core.errors import ConfigError

    raw = {"model": {"name": str(tiny_bert_dir)}, "data": {"train": "t"}, "task": {"name": "tag"}}
    cfg = validate_config({**raw, "eval": {"enabled": False}, "training": {"max_seq_len": 300}})
    with pytest.raises(ConfigError, match=r"max_seq_len is 300 but .* has 256 positions"):
        tag.load_model(cfg, labels=["O", "B-x"])
    prompt = validate_config(
        {**raw, "eval": {"enabled": False}, "training": {"max_seq_len": 250}, "method": {"name": "prompt"}}
    )
    with pytest.raises(ConfigError, match=r"250 \+ 20 virtual tokens"):
        tag.load_model(prompt, labels=["O", "B-x"])
