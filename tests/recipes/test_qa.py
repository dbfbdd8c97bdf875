"""The extractive qa recipe: windows and answer positions, SQuAD metrics, and an end-to-end CLI run."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from tests.helpers.cli import run_cli
from tests.helpers.configs import write_qa_config
from tests.helpers.data import synthetic_squad
from tests.helpers.models import build_token_bert, minilm_tokenizer_dir
from tests.helpers.paths import SHARED
from tests.helpers.report import assert_report_renders
from tunesmith.core.config import validate_config
from tunesmith.core.errors import ConfigError
from tunesmith.data.formats import RowError
from tunesmith.data.records import Pair
from tunesmith.metrics.text import exact_match, normalize, token_f1
from tunesmith.recipes import qa

XQUAD = SHARED / "squad_v1.1_dev_xquad_en" / "xquad.en.json"


def qa_config(**sections: dict) -> object:
    raw = {"model": {"name": "x"}, "data": {"train": "t"}, "task": {"name": "qa"}, "eval": {"enabled": False}}
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return validate_config(raw)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_tokenizer_dir())


@pytest.fixture(scope="session")
def tiny_bert_qa_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_token_bert(tmp_path_factory.mktemp("tiny-bert-qa"))


def test_convert_keeps_the_files_answer_offset_and_rejects_answers_not_in_the_context() -> None:
    cfg = qa_config()
    context = "Davis met Kuechly. Later Davis won."
    record = qa.convert(Pair("Who won?", "Davis", context=context, meta={"answer_starts": [25]}), cfg)
    assert record.meta["answer_start"] == 25  # the second "Davis", as the file says, not the first occurrence
    found = qa.convert(Pair("Who met Kuechly?", "Davis", context=context), cfg)
    assert found.meta["answer_start"] == 0  # no offset given: the first occurrence
    with pytest.raises(RowError, match="does not occur in field 'context'"):
        qa.convert(Pair("Who?", "Norman", context=context), cfg)
    with pytest.raises(RowError, match="needs a context"):
        qa.convert(Pair("Who?", "Norman"), cfg)


def test_squad_json_keeps_answer_offsets(tmp_path: Path) -> None:
    from tunesmith.data.load import load_source

    path = tmp_path / "squad.json"
    path.write_text(json.dumps(synthetic_squad(3, seed=0)), encoding="utf-8")
    loaded = load_source(str(path))
    assert [r.values["answer_starts"][0] for r in loaded.rows] == [
        p["qas"][0]["answers"][0]["answer_start"] for p in synthetic_squad(3, seed=0)["data"][0]["paragraphs"]
    ]


def test_long_contexts_become_overlapping_windows_with_the_answer_where_it_is(tokenizer) -> None:
    cfg = qa_config(training={"max_seq_len": 24}, task={"name": "qa", "qa": {"doc_stride": 8, "max_question_len": 8}})
    words = [f"w{i}" for i in range(40)]
    context = " ".join([*words[:30], "Paris", *words[30:]])
    record = qa.convert(Pair("Where is it?", "Paris", context=context), cfg)
    example = qa.encode_row(record, tokenizer, cfg)
    assert len(example.windows) > 2 and example.n_targets == len(example.windows)
    sep = tokenizer.sep_token_id
    contexts = [w.input_ids[w.input_ids.index(sep) + 1 : -1] for w in example.windows]
    paris = tokenizer.convert_tokens_to_ids("paris")
    for window, context_ids in zip(example.windows, contexts, strict=True):
        assert len(window.input_ids) <= 24
        if paris in context_ids:  # the window holds the answer: its start and end point at it
            assert window.input_ids[window.start : window.end + 1] == [paris]
        else:  # it does not: both point at [CLS]
            assert (window.start, window.end) == (0, 0)
    assert sum(paris in c for c in contexts) >= 1
    for first, second in itertools.pairwise(contexts):
        assert first[-8:] == second[:8]  # consecutive windows share doc_stride context tokens


def test_answer_positions_on_a_hand_checked_window(tokenizer) -> None:
    encoded = tokenizer("Who won?", "The Panthers won the game in 2016.", return_offsets_mapping=True)
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    # [CLS] who won ? [SEP] the panthers won the game in 2016 . [SEP]
    start, end = qa.answer_positions(encoded["offset_mapping"], encoded.sequence_ids(), 4, 12)  # "Panthers"
    assert (start, end, tokens[start]) == (6, 6, "panthers")
    start, end = qa.answer_positions(encoded["offset_mapping"], encoded.sequence_ids(), 17, 33)  # "the game in 2016"
    assert tokens[start : end + 1] == ["the", "game", "in", "2016"]


def test_best_span_respects_the_context_and_max_answer_length() -> None:
    start = [9.0, 0.0, 5.0, 1.0, 0.0, 0.0]
    end = [9.0, 0.0, 0.0, 1.0, 0.0, 4.0]
    # index 0 is [CLS] (outside the context 1..5); span 2..5 has the best score but is 4 tokens long
    spans = qa.best_span(start, end, (1, 5), n_best=20, max_answer_len=3)
    assert spans[0][1:] == (2, 3)
    assert qa.best_span(start, end, (1, 5), n_best=20, max_answer_len=4)[0][1:] == (2, 5)


def test_a_stride_that_leaves_no_room_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"task\.qa\.doc_stride"):
        qa_config(training={"max_seq_len": 128}, task={"name": "qa", "qa": {"doc_stride": 100}})


# ------------------------------------------------------------------ metrics


@pytest.mark.parametrize(
    ("prediction", "reference", "em", "f1"),
    [
        ("The Denver Broncos", "Denver Broncos", 1.0, 1.0),  # articles and case are normalised away
        ("Broncos!", "broncos", 1.0, 1.0),  # punctuation too
        ("Denver Broncos won", "Denver Broncos", 0.0, 0.8),  # P 2/3, R 1 -> F1 0.8
        ("Carolina Panthers", "Denver Broncos", 0.0, 0.0),
        ("the the", "a", 1.0, 1.0),  # only articles: both normalise to nothing
        ("one two two", "two two three", 0.0, 2 / 3),  # multiset overlap: two common tokens, P 2/3, R 2/3
    ],
)
def test_squad_exact_match_and_f1_on_hand_computed_cases(prediction: str, reference: str, em: float, f1: float) -> None:
    assert exact_match(prediction, reference) == em
    assert token_f1(prediction, reference) == pytest.approx(f1)


def test_squad_normalisation_matches_the_official_script() -> None:
    import re
    import string

    def official(s: str) -> str:  # normalize_answer from the SQuAD v1.1 evaluation script
        s = s.lower()
        s = "".join(ch for ch in s if ch not in set(string.punctuation))
        s = re.sub(r"\b(a|an|the)\b", " ", s)
        return " ".join(s.split())

    for text in [
        "The  Panthers' defense, an 'elite' unit!",
        "A theory of the atom",
        "  5½ sacks (2015)  ",
        "Ünïcode—dash",
    ]:
        assert normalize(text) == official(text)


def test_qa_scores_take_the_best_reference() -> None:
    records = [
        Pair("q", "Denver Broncos", context="c", references=["Denver Broncos", "Broncos", "the Broncos team"]),
        Pair("q", "1990", context="c"),
    ]
    predictions = [{"prediction": "the Broncos"}, {"prediction": "in 1990"}]
    scores = qa.score_records(predictions, records, qa_config())
    # row 1: EM 1 with "Broncos"; row 2: EM 0, F1 = 2 * (1/2 * 1) / (1/2 + 1) = 2/3
    assert scores["exact_match"] == pytest.approx(0.5)
    assert scores["token_f1"] == pytest.approx((1 + 2 / 3) / 2)


# ------------------------------------------------------------------ end to end


def test_qa_run_through_the_cli_learns_to_find_the_answer(tiny_bert_qa_dir: Path, tmp_path: Path) -> None:
    result = run_cli("run", str(write_qa_config(tmp_path, tiny_bert_qa_dir)))
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "runs" / "qa"
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    baselines = json.loads((run_dir / "eval" / "baselines.json").read_text())
    tuned, sentence = metrics["tuned"], baselines["best_sentence"]
    assert tuned["exact_match"] > 0.6, tuned  # a random span is almost never exactly the name
    assert tuned["token_f1"] > sentence["token_f1"] + 0.3, (tuned, sentence)
    comparison = json.loads((run_dir / "eval" / "comparison.json").read_text())
    assert comparison["exact_match"]["ci95"][0] > 0
    row = json.loads((run_dir / "eval" / "predictions.jsonl").read_text().splitlines()[0])
    assert row["input"].startswith("Who bought") and row["tuned"]["prediction"]
    assert "best sentence" in (run_dir / "report.html").read_text()
    assert_report_renders(run_dir / "report.html", tmp_path, "per-question-word")
