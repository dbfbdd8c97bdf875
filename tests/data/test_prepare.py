"""prepare: cleaning, PII, duplicates, leaks and splits, with a report whose counts add up."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.helpers.paths import SHARED
from tunesmith.core.config import DataConfig, TaskConfig
from tunesmith.core.errors import DataError
from tunesmith.data.pii import redact
from tunesmith.data.prepare import hold_out, prepare_data, write_prepared
from tunesmith.data.records import Labeled

TASK = TaskConfig()
SENTENCES = [
    "The committee approved the new budget after a long debate about school funding and road repairs.",
    "A rare comet will be visible from the northern hemisphere for three nights starting on Tuesday evening.",
    "Researchers trained a small model on legal contracts and measured how often it invented clauses.",
    "The bakery on the corner sells sourdough loaves every morning until they run out before noon.",
    "Heavy rain flooded several streets downtown, and the city opened two emergency shelters overnight.",
    "The museum's new exhibit shows maps drawn by sailors who crossed the Pacific in the eighteenth century.",
]


def chat(user: str, reply: str = "Noted.") -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]}


def write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def prepare(tmp_path: Path, train: list[dict], test: list[dict] | None = None, **data: object):
    cfg = DataConfig(
        train=write(tmp_path / "train.jsonl", train),
        test=write(tmp_path / "test.jsonl", test) if test else None,
        **data,
    )
    return prepare_data(cfg, TASK, seed=0)


def users(chats: list) -> list[str]:
    return [c.messages[0].content for c in chats]


def test_planted_exact_and_near_duplicates_are_removed_with_reasons(tmp_path: Path) -> None:
    near = SENTENCES[1].replace("Tuesday evening", "Tuesday night")  # one word changed
    rows = [chat(s) for s in SENTENCES] + [chat("  " + SENTENCES[0].upper() + " "), chat(near)]
    prepared = prepare(tmp_path, rows)
    assert users(prepared.splits["train"]) == SENTENCES
    kinds = {r.source.rsplit(":", 1)[1]: (r.kind, r.reason) for r in prepared.rejects}
    assert kinds["7"] == ("exact_duplicate", f"exact duplicate of {tmp_path / 'train.jsonl'}:1")
    assert kinds["8"][0] == "near_duplicate" and kinds["8"][1].endswith(f"{tmp_path / 'train.jsonl'}:2")
    report = prepared.report()
    assert report["dropped"] == {"exact_duplicate": 1, "near_duplicate": 1}
    assert report["rows_in"] == 8 == report["kept"] + 2 and report["balanced"]


def test_distinct_rows_are_not_near_duplicates(tmp_path: Path) -> None:
    assert len(prepare(tmp_path, [chat(s) for s in SENTENCES]).splits["train"]) == len(SENTENCES)


def test_train_test_leak_is_removed_from_train_never_from_test(tmp_path: Path) -> None:
    leaked = SENTENCES[2].replace("invented clauses", "invented terms")
    test = [chat(SENTENCES[0]), chat(SENTENCES[2])]
    prepared = prepare(tmp_path, [chat(s) for s in SENTENCES[:2]] + [chat(leaked), chat(SENTENCES[3])], test)
    assert users(prepared.splits["test"]) == [SENTENCES[0], SENTENCES[2]]
    assert users(prepared.splits["train"]) == [SENTENCES[1], SENTENCES[3]]
    assert prepared.report()["dropped"] == {"leak_into_test": 2}
    exact, near = prepared.rejects
    assert exact.reason.startswith("exact copy of test row") and exact.source.endswith("train.jsonl:1")
    assert near.reason.startswith("near copy") and near.source.endswith("train.jsonl:3")


def test_pii_is_replaced_by_typed_placeholders(tmp_path: Path) -> None:
    text = (
        "Write to jane.doe@example.com or call (415) 555-2671. Card 4111 1111 1111 1111, IBAN GB82 WEST 1234 5698 "
        "7654 32, server 10.0.0.12, repo https://ci:s3cr3tpass@git.example.com/x.git?token=abc123def"
    )
    redacted, counts = redact(text)
    assert redacted == (
        "Write to <EMAIL> or call <PHONE>. Card <CREDIT_CARD>, IBAN <IBAN>, server <IP>, "
        "repo https://<SECRET>@git.example.com/x.git?token=<SECRET>"
    )
    assert counts == {"EMAIL": 1, "PHONE": 1, "CREDIT_CARD": 1, "IBAN": 1, "IP": 1, "SECRET": 2}
    assert redact("card 4111 1111 1111 1112, order 1234567, version 1.2.3")[1] == {}  # Luhn fails; not an IP

    rows = [chat(text, "Reply to jane.doe@example.com")]
    reported = prepare(tmp_path, rows)
    assert reported.splits["train"][0].messages[0].content == text  # report mode changes nothing
    assert reported.report()["pii"]["EMAIL"] == 2
    redacting = prepare(tmp_path, rows, pii={"mode": "redact"})
    assert redacting.splits["train"][0].messages[1].content == "Reply to <EMAIL>"
    assert redacting.report()["changed"]["pii_redacted"] == 1


def test_cleaning_normalises_and_counts(tmp_path: Path) -> None:
    rows = [chat("Cafe\u0301 menu\x07  \r\n\r\n\r\n\r\nsoup "), chat(SENTENCES[0]), chat("\x00\x01", "gone")]
    prepared = prepare(tmp_path, rows)
    assert prepared.splits["train"][0].messages[0].content == "Caf\u00e9 menu\n\nsoup"
    report = prepared.report()
    assert report["changed"] == {"control_chars": 2, "unicode": 1, "whitespace": 1}
    assert report["dropped"] == {"empty_after_cleaning": 1}


def _labeled(n: int, labels: str = "ab") -> list[Labeled]:
    return [Labeled(f"row number {i}", labels[i % len(labels)], source=f"f:{i}") for i in range(n)]


def test_stratified_hold_out_keeps_label_shares(tmp_path: Path) -> None:
    rows = _labeled(300, "aab")  # 200 a, 100 b
    out = hold_out(rows, DataConfig(train="x", validation_fraction=0.1, test_fraction=0.2), seed=3)
    assert {k: Counter(r.label for r in v) for k, v in out.items()} == {
        "train": {"a": 140, "b": 70},
        "validation": {"a": 20, "b": 10},
        "test": {"a": 40, "b": 20},
    }


@settings(max_examples=30, deadline=None)
@given(n_old=st.integers(20, 60), n_new=st.integers(1, 60), seed=st.integers(0, 2**16))
def test_hash_split_is_stable_when_rows_are_added(n_old: int, n_new: int, seed: int) -> None:
    cfg = DataConfig(train="x", validation_fraction=0.5, stratify=False)
    rows = _labeled(n_old + n_new)

    def assignment(records: list[Labeled]) -> dict[str, str]:
        return {r.source: name for name, part in hold_out(records, cfg, seed).items() for r in part}

    before, after = assignment(rows[:n_old]), assignment(rows)
    assert all(after[source] == split for source, split in before.items())


ROW = st.one_of(
    st.builds(chat, st.sampled_from([*SENTENCES, "", "x", "same", "\x00"]), st.sampled_from(["ok", " ", "fine"])),
    st.just({"messages": [{"role": "user", "content": "no reply"}]}),
    st.just("not json"),
    st.just([1, 2]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(train=st.lists(ROW, min_size=1, max_size=25), test=st.lists(ROW, min_size=1, max_size=10))
def test_no_row_disappears_without_a_counted_reason(tmp_path: Path, train: list, test: list) -> None:
    def dump(path: Path, rows: list) -> str:
        lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return str(path)

    good = chat("A usable training row about gardening."), chat("A usable test row about astronomy.")
    cfg = DataConfig(
        train=dump(tmp_path / "p_train.jsonl", [*train, good[0]]),
        test=dump(tmp_path / "p_test.jsonl", [*test, good[1]]),
        train_rows=5,
    )
    prepared = prepare_data(cfg, TASK, seed=1)
    report = prepared.report()
    assert report["rows_in"] == len(train) + len(test) + 2
    assert report["rows_in"] == report["kept"] + sum(report["dropped"].values())
    assert len(prepared.rejects) == sum(n for k, n in report["dropped"].items() if not k.startswith("over_"))
    assert all(r.source.startswith(str(tmp_path)) and r.reason for r in prepared.rejects)


def test_report_and_rejects_are_written(tmp_path: Path) -> None:
    prepared = prepare(tmp_path, [chat(s) for s in SENTENCES] + [chat(SENTENCES[0])], validation_fraction=0.34)
    write_prepared(prepared, tmp_path / "out")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["rows"]["train"] + report["rows"]["validation"] == 6 and report["rows"]["validation"] >= 1
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["source"].rsplit(":", 1)[1]) for r in rejects] == [("exact_duplicate", "7")]


def test_labelled_file_becomes_chats_with_stratified_held_out_test() -> None:
    cfg = DataConfig(
        train=str(SHARED / "sst2" / "dev.tsv"),
        test_fraction=0.25,
        label_names={0: "negative", 1: "positive"},
        dedup={"near": False},
    )
    prepared = prepare_data(cfg, TASK, seed=0)
    report = prepared.report()
    assert report["rows_in"] == 872 and report["balanced"]
    test = report["labels"]["test"]
    assert test == {"0": 107, "1": 111}  # 25% of 428 negatives and of 444 positives
    assert prepared.splits["test"][0].messages[-1].content in ("negative", "positive")


def test_impossible_data_settings_are_refused() -> None:
    with pytest.raises(ValidationError, match=r"either data\.test"):
        DataConfig(train="x", test="y", test_fraction=0.1)
    with pytest.raises(ValidationError, match="must leave some rows for training"):
        DataConfig(train="x", validation_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValidationError, match="max_chars must be greater"):
        DataConfig(train="x", clean={"min_chars": 10, "max_chars": 5})
    with pytest.raises(ValidationError, match=r"set data\.dedup\.near: false too"):
        DataConfig(train="x", dedup={"exact": False})


def test_records_sft_cannot_train_on_are_refused_for_the_whole_file() -> None:
    cfg = DataConfig(train=str(SHARED / "wnut17" / "emerging.dev.conll"))
    with pytest.raises(DataError, match=r"(?s)emerging.dev.conll: rows in format 'tagged' become Tagged records"):
        prepare_data(cfg, TASK, seed=0)


def test_everything_dropped_is_explained(tmp_path: Path) -> None:
    rows = [{"messages": [{"role": "user", "content": "no reply"}]}] * 3
    with pytest.raises(DataError, match=r"no train rows left after preparation: 3 rows read.*no_assistant_message"):
        prepare(tmp_path, rows)


def test_parallel_text_from_a_config(tmp_path: Path) -> None:
    import yaml

    from tunesmith.core.config import load_config

    folder = SHARED / "ntrex128_en_de_fr"
    data = {
        "train": {
            "source": str(folder / "newstest2019-src.eng.txt"),
            "target": str(folder / "newstest2019-ref.fra.txt"),
        },
        "test_fraction": 0.1,
    }
    path = tmp_path / "mt.yaml"
    path.write_text(yaml.safe_dump({"model": {"name": "m"}, "data": data}))
    config = load_config(path)
    prepared = prepare_data(config.data, config.task, seed=0)
    report = prepared.report()
    assert report["rows_in"] == 1997 and report["balanced"]
    assert 150 < report["rows"]["test"] < 250 and report["rows"]["train"] + report["rows"]["test"] == report["kept"]
    first = prepared.splits["train"][0]
    assert first.source.startswith(str(folder / "newstest2019-src.eng.txt"))
    assert [m.role for m in first.messages] == ["user", "assistant"]
