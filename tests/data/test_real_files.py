"""Files as people have them: no header, a .txt that is really a table, Excel sheets, nested JSON, several columns
into one input; every column prepare did not use is reported; a bad row names its file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.cli import run_cli_in_process
from tests.helpers.paths import SST2
from tunesmith.core.config import DataConfig, TaskConfig
from tunesmith.core.errors import DataError
from tunesmith.data.check import check_file
from tunesmith.data.prepare import load_records, prepare_data
from tunesmith.data.records import Labeled, Pair, Text


def load(path: Path, **data: object):
    return load_records(str(path), DataConfig(train=str(path), **data))


def sst2_lines(n: int) -> list[tuple[str, str]]:
    rows = (SST2 / "dev.tsv").read_text(encoding="utf-8").splitlines()[1 : n + 1]
    return [tuple(row.rsplit("\t", 1)) for row in rows]  # type: ignore[misc]


def test_headerless_tsv_maps_columns_by_position(tmp_path: Path) -> None:
    path = tmp_path / "sst2.tsv"
    rows = sst2_lines(20)
    path.write_text("".join(f"{text}\t{label}\n" for text, label in rows), encoding="utf-8")
    loaded = load(path, header=False, columns={"text": 0, "label": 1})
    assert loaded.format == "labeled" and len(loaded.records) == 20 and not loaded.rejects
    first = loaded.records[0]
    assert isinstance(first, Labeled) and (first.text, first.label) == rows[0]
    assert first.source == f"{path}:1"  # the first line is a row, not a header
    with pytest.raises(DataError, match=r"(?s)no header.*data.columns, e.g. \{text: 0, label: 1\}"):
        load(path, header=False)


def test_txt_that_is_really_a_headerless_tsv_is_sniffed_and_a_bad_row_is_rejected_alone(tmp_path: Path) -> None:
    # The form of UCI's "sentiment labelled sentences" (amazon_cells_labelled.txt): sentence<TAB>label, no header.
    lines = [f"{text}\t{label}" for text, label in sst2_lines(30)]
    lines[7] = "a stray third column\t1\toops"
    path = tmp_path / "amazon_cells_labelled.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    loaded = load(path, columns={"text": 0, "label": 1})
    assert loaded.format == "labeled" and len(loaded.records) == 29
    [reject] = loaded.rejects
    assert (reject.source, reject.kind) == (f"{path}:8", "wrong_field_count")
    assert "expected 2 fields" in reject.reason and "no header" in reject.reason
    # With a header row the names are taken from it.
    named = tmp_path / "named.txt"
    named.write_text("sentence\tlabel\n" + "\n".join(lines[:7]) + "\n", encoding="utf-8")
    assert load(named).records[0].source == f"{named}:2"
    # Prose with commas is not a table: one row of text per line.
    prose = tmp_path / "prose.txt"
    prose.write_text("It rained, then it snowed.\nWe stayed in, mostly.\nThe end, at last.\n", encoding="utf-8")
    assert [type(r) for r in load(prose).records] == [Text, Text, Text]


def write_workbook(path: Path) -> Path:
    from openpyxl import Workbook

    book = Workbook()
    book.active.title = "Notes"
    book.active.append(["not the data"])
    sheet = book.create_sheet("Reviews")
    sheet.append(["label", "title", "text"])
    sheet.append([1, "Great", "Loved every minute"])
    sheet.append([0, "Meh", None])
    sheet["C3"] = "#N/A"  # an error cell, as Excel writes a failed formula
    sheet.append([0, "Bad", "Hated it"])
    sheet.append([1, "Extra", "Fine", "a stray value"])
    book.save(path)
    return path


def test_excel_sheet_by_name_with_bad_rows_named_by_cell(tmp_path: Path) -> None:
    path = write_workbook(tmp_path / "reviews.xlsx")
    loaded = load(path, sheet="Reviews", text_template="{title}: {text}")
    assert [(r.text, r.label) for r in loaded.records] == [("Great: Loved every minute", "1"), ("Bad: Hated it", "0")]
    reasons = {r.source: (r.kind, r.reason) for r in loaded.rejects}
    assert reasons[f"{path}:3"][0] == "wrong_type"
    assert "cell C3 (field 'text')" in reasons[f"{path}:3"][1] and "#N/A" in reasons[f"{path}:3"][1]
    assert reasons[f"{path}:5"][0] == "wrong_field_count" and "column D" in reasons[f"{path}:5"][1]
    with pytest.raises(DataError, match=r"no sheet named 'Revues'.*Notes, Reviews"):
        load(path, sheet="Revues")
    headerless = load(path, sheet="Reviews", header=False, columns={"label": 0, "text": 2})
    assert headerless.records[0].text == "text"  # the header row read as data, as asked


def test_dotted_columns_and_templates_reach_into_nested_json(tmp_path: Path) -> None:
    path = tmp_path / "reviews.jsonl"
    rows = [
        {"review": {"title": "Superb", "body": "Loved it"}, "stars": 5},
        {"review": {"title": "Awful"}, "stars": 1},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    loaded = load(path, columns={"text": "review.body", "label": "stars"})
    assert [(r.text, r.label) for r in loaded.records] == [("Loved it", "5")]
    [reject] = loaded.rejects
    assert reject.source == f"{path}:2" and reject.kind == "missing_field"
    assert "'text'" in reject.reason and "review.body" in reject.reason
    templated = load(path, columns={"label": "stars"}, text_template="{review.title}. {review.body}")
    assert templated.records[0].text == "Superb. Loved it"
    assert "missing field 'review.body'" in templated.rejects[0].reason


def test_text_template_joins_columns_and_prepare_reports_every_unused_column(tmp_path: Path) -> None:
    path = tmp_path / "news.csv"
    path.write_text(
        "label,title,text,url\n"
        + "".join(f'{i % 4},"Title {i}","Body of story {i} about topic {i % 4}.",http://x/{i}\n' for i in range(40)),
        encoding="utf-8",
    )
    plain = prepare_data(DataConfig(train=str(path), test_fraction=0.2), TaskConfig(name="classify"), 0, lambda r: r)
    assert plain.summary["unused_columns"] == {f"train: {path}": ["title", "url"]}
    data = DataConfig(train=str(path), test_fraction=0.2, text_template="{title}. {text}")
    prepared = prepare_data(data, TaskConfig(name="classify"), 0, lambda r: r)
    assert prepared.summary["unused_columns"] == {f"train: {path}": ["url"]}
    texts = [r.text for r in prepared.splits["train"]]
    assert all(t.startswith("Title ") and ". Body of story" in t for t in texts)
    assert check_file(str(path), DataConfig(train=str(path))).unused_columns == ["title", "url"]


def test_text_pair_from_a_column_and_a_templated_question(tmp_path: Path) -> None:
    nli = tmp_path / "nli.jsonl"
    nli.write_text(json.dumps({"premise": "A man sleeps.", "hypothesis": "He is awake.", "label": "no"}) + "\n")
    [row] = load(nli, columns={"text": "premise", "text_pair": "hypothesis"}).records
    assert (row.text, row.text_pair, row.label) == ("A man sleeps.", "He is awake.", "no")
    qa = tmp_path / "qa.jsonl"
    qa.write_text(
        json.dumps({"title": "Bikes", "context": "Maria bought a bike.", "question": "Who?", "answers": ["Maria"]})
        + "\n"
    )
    [pair] = load(qa, text_template="{title}: {question}").records
    assert isinstance(pair, Pair) and pair.source_text == "Bikes: Who?" and pair.context == "Maria bought a bike."


def test_text_template_on_tagged_rows_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "t.conll"
    path.write_text("Paris\tB-LOC\nis\tO\n")
    with pytest.raises(DataError, match=r"text_template.*tagged row's input is its list of tokens"):
        load(path, text_template="{tokens}")


def test_cli_check_reads_headerless_and_excel_files(tmp_path: Path) -> None:
    path = tmp_path / "sst2.tsv"
    path.write_text("".join(f"{t}\t{label}\n" for t, label in sst2_lines(10)) + "bad row\n", encoding="utf-8")
    done = run_cli_in_process("data", "check", str(path), "--no-header", "--column", "text=0", "--column", "label=1")
    assert done.returncode == 1, done.stderr
    assert "10 valid" in done.stdout and "line 11: expected 2 fields" in done.stdout
    book = write_workbook(tmp_path / "reviews.xlsx")
    done = run_cli_in_process("data", "check", str(book), "--sheet", "Reviews", "--json")
    result = json.loads(done.stdout)
    assert result["unused_columns"] == ["title"] and result["valid_rows"] == 2
    assert {p["line"] for p in result["problems"]} == {"3", "5"}


def test_prepare_says_once_which_columns_it_did_not_use(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    from tests.helpers.configs import write_tiny_config
    from tunesmith.pipeline.run import Run

    files = {}
    for split, n in (("train", 24), ("test", 8)):
        files[split] = tmp_path / f"{split}.csv"
        files[split].write_text(
            "label,title,text\n" + "".join(f'{i % 2},"T{i}","story {i} of {split}"\n' for i in range(n)),
            encoding="utf-8",
        )
    data = {"train": str(files["train"]), "test": str(files["test"]), "prompt_template": None}
    data |= {"completion_template": "{completion}", "train_rows": None, "test_rows": None}
    run = Run.from_file(write_tiny_config(tmp_path, tiny_model_dir, data=data))
    run.open()
    run.prepare()
    err = capsys.readouterr().err
    assert err.count("columns not used: title") == 1
    report = json.loads((run.dir.data / "report.json").read_text())
    assert report["unused_columns"] == {f"train: {files['train']}": ["title"], f"test: {files['test']}": ["title"]}
