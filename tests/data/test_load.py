"""Every supported file type and row format loads into the right typed records; bad input is explained."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tests.helpers.paths import SHARED
from tunesmith.core.config import DataConfig
from tunesmith.core.errors import DataError
from tunesmith.data.load import read_parallel
from tunesmith.data.prepare import load_records
from tunesmith.data.records import Chat, Feedback, Labeled, Pair, Preference, Tagged, Text


def load(spec: str | Path, reader: str | None = None, **data: object):
    return load_records(str(spec), DataConfig(train=str(spec), **data), reader)


@pytest.mark.parametrize(
    ("path", "reader", "record_type", "count", "fmt"),
    [
        ("sst2/train_first2000.tsv", None, Labeled, 2000, "labeled"),
        ("sst2/dev.tsv", None, Labeled, 872, "labeled"),
        ("trec/train_5500.label", None, Labeled, 5452, "labeled"),
        ("trec/TREC_10.label", None, Labeled, 500, "labeled"),
        ("wnut17/wnut17train.conll", None, Tagged, 3394, "tagged"),
        ("wnut17/emerging.dev.conll", None, Tagged, 1009, "tagged"),
        ("wnut17/emerging.test.annotated", "conll", Tagged, 1287, "tagged"),
        ("scitldr/dev.jsonl", None, Pair, 619, "pair"),
        ("scitldr/test.jsonl", None, Pair, 618, "pair"),
        ("squad_v1.1_dev_xquad_en/xquad.en.json", None, Pair, 1190, "squad"),
        ("hh_rlhf_helpful_base/test.jsonl.gz", None, Preference, 2354, "preference"),
        ("oasst_en_100/conversations_messages.jsonl", None, Chat, 95, "messages"),
    ],
)
def test_shared_datasets_load_as_the_right_records(path, reader, record_type, count, fmt) -> None:
    loaded = load(SHARED / path, reader)
    assert loaded.format == fmt
    assert len(loaded.records) == count and not loaded.rejects
    assert all(type(r) is record_type for r in loaded.records)
    first_line = 2 if path.endswith(".tsv") else 1  # after the header
    assert loaded.records[0].source == f"{SHARED / path}:{first_line}"


def test_shared_dataset_contents_are_parsed_faithfully() -> None:
    trec = load(SHARED / "trec/TREC_10.label").records[0]
    assert (trec.label, trec.text) == ("NUM:dist", "How far is it from Denver to Aspen ?")
    wnut = load(SHARED / "wnut17/wnut17train.conll").records[0]
    assert wnut.tokens[14:17] == ["Empire", "State", "Building"]
    assert wnut.tags[14:17] == ["B-location", "I-location", "I-location"]
    squad = load(SHARED / "squad_v1.1_dev_xquad_en/xquad.en.json").records[0]
    assert squad.context.startswith("The Panthers defense") and squad.target in squad.context
    hh = load(SHARED / "hh_rlhf_helpful_base/test.jsonl.gz").records[0]
    assert [m.role for m in hh.prompt] == ["user"] and hh.chosen.startswith("To be honest") and hh.rejected
    oasst = load(SHARED / "oasst_en_100/conversations_messages.jsonl").records
    assert sorted({len(c.messages) for c in oasst}) == [2, 4, 6]
    tldr = load(SHARED / "scitldr/dev.jsonl").records[0]
    assert tldr.source_text.startswith("Mixed precision training") and tldr.target


def test_ntrex_parallel_text_pairs_line_by_line() -> None:
    folder = SHARED / "ntrex128_en_de_fr"
    rows, rejects, columns = read_parallel(folder / "newstest2019-src.eng.txt", folder / "newstest2019-ref.deu.txt")
    assert len(rows) == 1997 and not rejects and columns == ["source", "target"]
    assert rows[0].values["target"].startswith("Mitglieder der Nationalversammlung")
    assert not rows[0].values["source"].endswith("\r")  # CRLF line endings
    assert len(load(folder / "newstest2019-src.eng.txt").records) == 1997  # alone: raw text, one row per line


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_every_row_format_is_detected(tmp_path: Path) -> None:
    cases = {
        "sharegpt": ([{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}], Chat),
        "alpaca": ([{"instruction": "Add", "input": "2+2", "output": "4"}], Chat),
        "prompt_completion": ([{"prompt": "q", "completion": "a"}], Chat),
        "text": ([{"text": "some raw text"}], Text),
        "labeled": ([{"text": "premise", "text_pair": "hypothesis", "label": "entail"}], Labeled),
        "tagged": ([{"tokens": ["Paris", "is"], "tags": ["B-LOC", "O"]}], Tagged),
        "pair": ([{"source": "Hallo", "target": "Hello"}], Pair),
        "preference": ([{"prompt": "q", "chosen": "good", "rejected": "bad"}], Preference),
        "openai_preference": (
            [
                {
                    "input": {"messages": [{"role": "user", "content": "q"}]},
                    "preferred_output": [{"role": "assistant", "content": "good"}],
                    "non_preferred_output": [{"role": "assistant", "content": "bad"}],
                }
            ],
            Preference,
        ),
        "feedback": ([{"prompt": "q", "completion": "a", "label": True}], Feedback),
    }
    for fmt, (rows, record_type) in cases.items():
        loaded = load(_jsonl(tmp_path / f"{fmt}.jsonl", rows))
        assert loaded.format == fmt, fmt
        assert type(loaded.records[0]) is record_type, fmt
    alpaca = load(tmp_path / "alpaca.jsonl").records[0]
    assert [m.content for m in alpaca.messages] == ["Add\n\n2+2", "4"]
    dpo = load(tmp_path / "openai_preference.jsonl").records[0]
    assert (dpo.prompt[0].content, dpo.chosen, dpo.rejected) == ("q", "good", "bad")


def test_per_message_weight_is_kept(tmp_path: Path) -> None:
    rows = [
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "draft", "weight": 0},
                {"role": "user", "content": "again"},
                {"role": "assistant", "content": "final", "weight": 1},
            ]
        }
    ]
    chat = load(_jsonl(tmp_path / "w.jsonl", rows)).records[0]
    assert [m.weight for m in chat.messages] == [None, 0, None, 1]


def test_column_mapping_and_explicit_format(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    path.write_text('review,stars\n"good, really",5\nbad,1\n', encoding="utf-8")
    loaded = load(path, columns={"text": "review", "label": "stars"})
    assert loaded.format == "labeled" and [(r.text, r.label) for r in loaded.records] == [
        ("good, really", "5"),
        ("bad", "1"),
    ]
    forced = load(_jsonl(tmp_path / "t.jsonl", [{"text": "x", "label": "y"}]), format="text")
    assert forced.format == "text" and type(forced.records[0]) is Text


def test_parquet_gzip_folder_and_saved_hf_dataset(tmp_path: Path) -> None:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(5)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    assert len(load(tmp_path / "d.parquet").records) == 5
    (tmp_path / "d.csv.gz").write_bytes(gzip.compress(b"text,label\nfine,1\nbad,0\n"))
    assert [r.label for r in load(tmp_path / "d.csv.gz").records] == ["1", "0"]
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "a.txt").write_text("First document.\n\nTwo paragraphs.")
    (docs / "sub" / "b.md").write_text("# Title\n\nMarkdown body.")
    (docs / "ignored.bin").write_bytes(b"\x00\x01")
    texts = load(docs).records
    assert [type(r) for r in texts] == [Text, Text] and texts[1].source.endswith("sub/b.md:1")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    saved = load(tmp_path / "saved")
    assert saved.format == "prompt_completion" and len(saved.records) == 5


def test_hub_dataset_offline_fails_with_a_clear_message() -> None:
    with pytest.raises(
        DataError, match=r"hf:nobody/no-such-dataset\?split=train: could not load the Hugging Face dataset"
    ):
        load("hf:nobody/no-such-dataset?split=train")


# ---------------------------------------------------------------- bad input


def test_binary_garbage(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(bytes(range(256)) * 40)
    with pytest.raises(DataError, match=r"data.jsonl: this looks like a binary file.*expected UTF-8 text"):
        load(path)


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty.csv: the file is empty"):
        load(path)


def test_csv_with_another_delimiter(tmp_path: Path) -> None:
    path = tmp_path / "semi.csv"
    path.write_text("text;label\ngood;1\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"semi.csv:1: the header is one column 'text;label' that contains semicolons"):
        load(path)


def test_mixed_formats_in_one_file(tmp_path: Path) -> None:
    chat = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    path = _jsonl(tmp_path / "mixed.jsonl", [chat, chat | {"id": 2}, {"prompt": "q", "completion": "a"}])
    loaded = load(path)
    assert loaded.format == "messages" and len(loaded.records) == 2
    (reject,) = loaded.rejects
    assert reject.source == f"{path}:3"
    assert "missing field 'messages'" in reject.reason and "looks like 'prompt_completion'" in reject.reason


def test_unknown_columns_name_what_is_expected(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "odd.jsonl", [{"question": "q", "reply": "a"}])
    with pytest.raises(DataError, match=r"(?s)odd.jsonl: cannot tell the data format.*question, reply.*data.columns"):
        load(path)


def test_json_lines_named_json(tmp_path: Path) -> None:
    path = tmp_path / "rows.json"
    path.write_text('{"text": "a"}\n{"text": "b"}\n')
    with pytest.raises(DataError, match=r"rows.json:2: malformed JSON: Extra data; .*name it .jsonl"):
        load(path)


def test_an_overlong_line_is_rejected_without_reading_it_whole(tmp_path: Path, monkeypatch) -> None:
    import tunesmith.data.load as load_module

    monkeypatch.setattr(load_module, "MAX_ROW_BYTES", 1000)  # stands in for 64 MiB; the same code path as 2 GB
    path = tmp_path / "big.jsonl.gz"
    good = json.dumps({"text": "fine", "label": "1"})
    path.write_bytes(gzip.compress(f'{good}\n{{"text": "{"x" * 5000}", "label": "0"}}\n{good}\n'.encode()))
    loaded = load(path)
    assert [r.source.rsplit(":", 1)[1] for r in loaded.records] == ["1", "3"]
    (reject,) = loaded.rejects
    assert reject.source == f"{path}:2" and reject.kind == "line_too_long"
    assert reject.reason == "the line is 5,027 bytes; a row may be at most 1,000 bytes"


def test_config_paths_hub_names_and_parallel_files(tmp_path: Path) -> None:
    import yaml

    from tunesmith.core.config import load_config

    path = tmp_path / "c.yaml"
    data = {"train": "hf:stanfordnlp/sst2?split=train", "test": {"source": "src.txt", "target": "ref.txt"}}
    path.write_text(yaml.safe_dump({"model": {"name": "m"}, "data": data}))
    config = load_config(path)
    assert config.data.train == "hf:stanfordnlp/sst2?split=train"
    assert (config.data.test.source, config.data.test.target) == (str(tmp_path / "src.txt"), str(tmp_path / "ref.txt"))


def test_config_offers_exactly_the_formats_and_readers_the_loader_knows() -> None:
    import typing

    from tunesmith.core.config import DataFormat, FileReader
    from tunesmith.data.formats import FORMATS, PARSERS
    from tunesmith.data.load import READERS

    assert set(typing.get_args(DataFormat)) == {"auto", *FORMATS} == {"auto", *PARSERS}
    assert set(typing.get_args(FileReader)) == {"auto", *READERS}


def test_an_overlong_csv_line_is_rejected_at_its_line(tmp_path: Path, monkeypatch) -> None:
    import tunesmith.data.load as load_module

    monkeypatch.setattr(load_module, "MAX_ROW_BYTES", 1000)  # the same code path as a 2 GB line
    path = tmp_path / "big.csv"
    path.write_text(f"text,label\nfine,1\n{'x' * 5000},0\nalso fine,0\n", encoding="utf-8")
    loaded = load(path)
    assert [(r.text, r.source.rsplit(":", 1)[1]) for r in loaded.records] == [("fine", "2"), ("also fine", "4")]
    (reject,) = loaded.rejects
    assert (reject.source, reject.kind) == (f"{path}:3", "line_too_long")


def test_a_truncated_gzip_fails_as_a_whole_naming_the_file(tmp_path: Path) -> None:
    good = "".join(json.dumps({"text": f"row {i}", "label": "1"}) + "\n" for i in range(20_000))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(gzip.compress(good.encode())[:-2000])  # rows stream in, then the file ends early
    with pytest.raises(DataError, match=r"cut.jsonl.gz: cannot be read"):
        load(path)


def test_parquet_is_read_in_record_batches_with_continuous_row_numbers(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"text": f"review {i}", "label": str(i % 2)} for i in range(25_000)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "big.parquet", row_group_size=4_000)
    loaded = load(tmp_path / "big.parquet")
    assert len(loaded.records) == 25_000 and loaded.records[-1].text == "review 24999"
    assert loaded.records[-1].source.endswith("big.parquet:25000")
