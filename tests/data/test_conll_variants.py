"""CoNLL as distributed: space- or tab-separated columns, -DOCSTART- lines, a chosen tag column, IOB1/BIO/BIOES tags
converted to BIO and scored in seqeval's strict mode for that scheme."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.configs import write_tag_config
from tunesmith.core.config import DataConfig, load_config
from tunesmith.core.errors import ConfigError, DataError
from tunesmith.data.prepare import load_records
from tunesmith.data.tag_schemes import SchemeError, to_bio
from tunesmith.metrics.tagging import tagging_metrics
from tunesmith.recipes import tag

# The layout of CoNLL-2003's eng.train: token POS chunk NER, space-separated, IOB1 tags, document breaks.
CONLL2003 = """-DOCSTART- -X- -X- O

EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC
call NN I-NP O
to TO I-VP O
boycott VB I-VP O
British JJ I-NP I-MISC
lamb NN I-NP O
. . O O

Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

In IN I-PP O
Paris NNP I-NP I-LOC
Rome NNP I-NP B-LOC
"""


def load(path: Path, reader: str | None = None, **data: object):
    return load_records(str(path), DataConfig(train=str(path), **data), reader)


def test_conll2003_as_distributed(tmp_path: Path) -> None:
    path = tmp_path / "eng.train"
    path.write_text(CONLL2003, encoding="utf-8")
    loaded = load(path, "conll", tag_scheme="IOB1")
    assert [r.tokens[0] for r in loaded.records] == ["EU", "Peter", "In"] and not loaded.rejects
    assert loaded.records[0].tags[:3] == ["B-ORG", "O", "B-MISC"]
    assert loaded.records[1].tags == ["B-PER", "I-PER"]
    assert loaded.records[2].tags == ["O", "B-LOC", "B-LOC"]  # IOB1's B- splits two adjacent locations
    assert loaded.records[0].source == f"{path}:3"  # its first token line, after the document break
    pos = load(path, "conll", tag_column=1)
    assert pos.records[0].tags[:3] == ["NNP", "VBZ", "JJ"]
    chunks = load(path, "conll", tag_column="2", tag_scheme="IOB1")
    assert chunks.records[0].tags[:3] == ["B-NP", "B-VP", "B-NP"]
    tabbed = tmp_path / "tabbed.conll"
    tabbed.write_text(CONLL2003.replace(" ", "\t"), encoding="utf-8")
    assert load(tabbed, tag_scheme="IOB1").records[0].tags == loaded.records[0].tags


def test_a_tag_column_out_of_range_is_one_clear_error_and_a_short_row_is_rejected_alone(tmp_path: Path) -> None:
    path = tmp_path / "eng.train"
    path.write_text(CONLL2003, encoding="utf-8")
    with pytest.raises(DataError, match=r"eng.train:3: data.tag_column is 5 but the line has 4 columns"):
        load(path, "conll", tag_column=5)
    with pytest.raises(DataError, match="tag_column 0 is the token column"):
        load(path, "conll", tag_column=0)
    short = tmp_path / "short.conll"
    short.write_text(CONLL2003.replace("Blackburn NNP I-NP I-PER", "Blackburn NNP"), encoding="utf-8")
    loaded = load(short, "conll", tag_column=3)
    [reject] = loaded.rejects
    assert reject.source == f"{short}:14" and reject.kind == "wrong_field_count" and "column 3" in reject.reason
    assert len(loaded.records) == 2


def test_tag_schemes_convert_to_bio_and_bad_sequences_are_rejected_with_their_token(tmp_path: Path) -> None:
    assert to_bio(["S-PER", "O", "B-LOC", "I-LOC", "E-LOC"], "BIOES") == ["B-PER", "O", "B-LOC", "I-LOC", "I-LOC"]
    assert to_bio(["I-PER", "B-PER", "I-PER"], "IOB1") == ["B-PER", "B-PER", "I-PER"]
    with pytest.raises(SchemeError, match="does not end with E-"):
        to_bio(["B-PER", "O"], "BIOES")
    path = tmp_path / "bio.conll"
    path.write_text("Paris\tB-LOC\nis\tO\n\nnice\tO\nBerlin\tI-LOC\n\nOslo\tE-LOC\n", encoding="utf-8")
    loaded = load(path, tag_scheme="BIO")
    assert [r.tokens for r in loaded.records] == [["Paris", "is"]]
    reasons = {r.source: r for r in loaded.rejects}
    assert reasons[f"{path}:4"].kind == "invalid_tags"
    assert "field 'tags': tag 'I-LOC' at token 1 continues no chunk" in reasons[f"{path}:4"].reason
    assert "data.tag_scheme: IOB1" in reasons[f"{path}:4"].reason
    assert "'E-LOC' at token 0 is not a BIO tag" in reasons[f"{path}:7"].reason


def test_an_unknown_tag_scheme_is_one_clear_config_error(tmp_path: Path) -> None:
    assert DataConfig(train="x.conll", tag_scheme="iobes").tag_scheme == "BIOES"
    config = write_tag_config(tmp_path, tmp_path, data={"tag_scheme": "BILOU"})
    with pytest.raises(ConfigError, match=r"data.tag_scheme: expected one of 'IOB1', 'BIO', 'BIOES'.*got 'BILOU'"):
        load_config(config)


def test_named_tag_column_in_json_rows(tmp_path: Path) -> None:
    path = tmp_path / "conll2003.jsonl"  # the Hugging Face layout of conll2003
    row = {"tokens": ["EU", "rejects"], "pos_tags": ["NNP", "VBZ"], "ner_tags": ["B-ORG", "O"]}
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    assert load(path).records[0].tags == ["B-ORG", "O"]
    loaded = load(path, tag_column="pos_tags")
    assert loaded.records[0].tags == ["NNP", "VBZ"] and loaded.unused == ["ner_tags"]


def test_a_known_scheme_is_scored_in_seqevals_strict_mode(tmp_path: Path) -> None:
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2

    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG", "O"]]
    predicted = [["I-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG", "O"]]  # an ill-formed PER chunk
    lenient, strict = tagging_metrics(predicted, gold), tagging_metrics(predicted, gold, "BIO")
    assert lenient["f1"] == 1.0 and strict["recall"] == pytest.approx(2 / 3)
    report = classification_report(gold, predicted, mode="strict", scheme=IOB2, output_dict=True)
    assert strict["f1"] == pytest.approx(report["micro avg"]["f1-score"])
    assert strict["macro_f1"] == pytest.approx(report["macro avg"]["f1-score"])
    # The tag recipe scores strictly when the files' scheme is known (its rows were converted to BIO).
    cfg = load_config(write_tag_config(tmp_path, tmp_path, data={"tag_scheme": "IOB1"}))
    records = [tag.Tagged(["w"] * 4, g) for g in gold]
    scored = tag.score_records([{"prediction": p} for p in predicted], records, cfg)
    assert scored["recall"] == pytest.approx(2 / 3)
