"""Cleaning beyond characters: repeated and boilerplate lines of raw text, language, token lengths; dedup at scale."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunesmith.core.config import DataConfig, TaskConfig
from tunesmith.core.errors import DataError
from tunesmith.data.clean import LanguageDetector, common_lines, drop_lines, drop_repeated_lines
from tunesmith.data.dedup import find_duplicates, find_overlap
from tunesmith.data.prepare import prepare_data
from tunesmith.data.records import Text
from tunesmith.data.tokens import TokenCounter, length_stats

TASK = TaskConfig()
ENGLISH = "The committee approved the new budget after a long debate about school funding and road repairs."
GERMAN = "Der Ausschuss hat den neuen Haushalt nach einer langen Debatte über Schulen und Straßen genehmigt."
FRENCH = "Le comité a approuvé le nouveau budget après un long débat sur les écoles et les routes."


def chat(user: str, reply: str = "Noted, thank you.") -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]}


def write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_line_functions() -> None:
    assert drop_repeated_lines("a\nb\n  a \n\n\nc\nb") == "a\nb\n\n\nc"
    assert drop_repeated_lines("no repeats\nhere") == "no repeats\nhere"
    docs = ["Home | About\nbody one\nFooter (c) 2024", "Home | About\nbody two\nFooter (c) 2024", "Home | About\nthree"]
    assert common_lines(docs, 3) == {"Home | About"}
    assert common_lines(docs, 2) == {"Home | About", "Footer (c) 2024"}
    assert drop_lines(docs[0], {"Home | About", "Footer (c) 2024"}) == "body one"


def test_language_detector() -> None:
    detect = LanguageDetector()
    assert [detect(t)[0] for t in (ENGLISH, GERMAN, FRENCH)] == ["en", "de", "fr"]
    assert detect("ok thanks") is None  # too short to judge


def test_raw_text_loses_boilerplate_and_repeated_lines_counted(tmp_path: Path) -> None:
    docs = tmp_path / "site"
    docs.mkdir()
    for i, body in enumerate(["Rivers carry water to the sea.", "Mountains rise slowly.", "Cities grow."]):
        text = f"Home | News | Contact\n{body}\n{body}\nNew paragraph {i}.\nCopyright 2024 Example Ltd."
        (docs / f"page{i}.txt").write_text(text, encoding="utf-8")
    cfg = DataConfig(train=str(docs), clean={"repeated_lines": True, "boilerplate_min_docs": 3})
    prepared = prepare_data(cfg, TASK, seed=0, convert=lambda r: r, accepts=(Text,))
    assert [r.text for r in prepared.splits["train"]] == [
        "Rivers carry water to the sea.\nNew paragraph 0.",
        "Mountains rise slowly.\nNew paragraph 1.",
        "Cities grow.\nNew paragraph 2.",
    ]
    report = prepared.report()
    assert report["changed"]["repeated_lines"] == 3 and report["changed"]["boilerplate_lines"] == 3
    assert report["balanced"]


def test_language_filter_drops_other_languages_with_a_reason(tmp_path: Path) -> None:
    rows = [chat(ENGLISH), chat(GERMAN), chat(FRENCH), chat("Hallo!")]
    cfg = DataConfig(train=write(tmp_path / "t.jsonl", rows), clean={"languages": ["en"]}, dedup={"near": False})
    prepared = prepare_data(cfg, TASK, seed=0)
    assert [c.messages[0].content for c in prepared.splits["train"]] == [ENGLISH, "Hallo!"]  # too short: kept
    assert prepared.report()["dropped"] == {"wrong_language": 2}
    reasons = {r.source.rsplit(":", 1)[1]: r.reason for r in prepared.rejects}
    assert reasons["2"].startswith("detected language 'de'") and reasons["3"].startswith("detected language 'fr'")


def test_token_limits_and_token_report(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = [chat("hi"), chat(ENGLISH), chat(ENGLISH.replace("budget", "plan")), chat(" ".join([ENGLISH] * 6))]
    path = write(tmp_path / "t.jsonl", rows)
    counter = TokenCounter(tokenizer, max_len=40)
    lengths = counter.count(prepare_data(DataConfig(train=path, dedup={"near": False}), TASK, 0).splits["train"])
    low, high = sorted(lengths)[0] + 1, sorted(lengths)[-1] - 1  # drops exactly the shortest and the longest

    cfg = DataConfig(train=path, dedup={"near": False}, clean={"min_tokens": low, "max_tokens": high})
    with pytest.raises(DataError, match="min_tokens / max_tokens count tokens with the model's tokenizer"):
        prepare_data(cfg, TASK, seed=0)
    prepared = prepare_data(cfg, TASK, seed=0, tokens=counter)
    report = prepared.report()
    assert report["dropped"] == {"too_few_tokens": 1, "too_many_tokens": 1} and report["balanced"]
    assert [r.source.rsplit(":", 1)[1] for r in prepared.rejects] == ["1", "4"]
    train = report["tokens"]["train"]
    kept = counter.count(prepared.splits["train"])
    assert train["count"] == 2 and train["total"] == sum(kept) and train["limit"] == 40
    assert sum(b["rows"] for b in train["histogram"]) == 2
    assert report["train_tokens_per_epoch"] == sum(min(n, 40) for n in kept)


def test_length_stats() -> None:
    stats = length_stats([5, 1, 10, 3], limit=4)
    assert (stats["min"], stats["max"], stats["total"], stats["over_limit"], stats["trained"]) == (1, 10, 19, 2, 12)
    assert [b["rows"] for b in stats["histogram"]] == [1, 0, 1, 0, 1, 0, 0, 0, 0, 1]
    assert length_stats([]) == {}


def _sentence(rng: random.Random, words: list[str]) -> str:
    return " ".join(rng.choices(words, k=40))


def test_planted_near_duplicates_found_at_scale() -> None:
    """3,000 rows of 40 words with 150 planted near copies (one word changed): all found, nothing else flagged."""
    rng = random.Random(7)
    words = [f"{a}{b}" for a in ("ka", "lo", "mi", "nu", "po", "ra", "se", "tu") for b in ("n", "r", "s", "t", "x")]
    rows = [f"{i}: {_sentence(rng, words)}" for i in range(2850)]
    planted = {}
    for _ in range(150):
        source = rng.randrange(2850)
        tokens = rows[source].split()
        at = rng.randrange(1, len(tokens))
        tokens[at] = rng.choice([w for w in words if w != tokens[at]])
        planted[len(rows)] = source
        rows.append(" ".join(tokens))
    near = {m.index: m.of for m in find_duplicates(rows, threshold=0.8) if m.kind == "near"}
    assert near == planted
    test_rows = [rows[i] for i in list(planted)[:20]]
    leaks = find_overlap(rows[:2850], test_rows, threshold=0.8)
    assert {m.index for m in leaks} == {planted[i] for i in list(planted)[:20]}


ROW = st.one_of(
    st.builds(chat, st.sampled_from([ENGLISH, GERMAN, FRENCH, "", "x", "\x00"]), st.sampled_from(["ok", " "])),
    st.just("not json"),
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(ROW, min_size=1, max_size=15))
def test_every_row_is_kept_or_counted_with_the_language_filter(tmp_path: Path, rows: list) -> None:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path = tmp_path / "lang.jsonl"
    path.write_text("\n".join([*lines, json.dumps(chat(ENGLISH))]) + "\n", encoding="utf-8")
    cfg = DataConfig(train=str(path), clean={"languages": ["en"], "min_chars": 3})
    report = prepare_data(cfg, TASK, seed=0).report()
    assert report["rows_in"] == len(rows) + 1 == report["kept"] + sum(report["dropped"].values())


def test_a_large_cluster_of_near_copies_keeps_one_row() -> None:
    """More near copies than an LSH bucket compares neighbours: each still meets the row that is kept."""
    base = "the same long sentence about rivers and mountains and cities and music and gardens, number "
    rows = [base + str(i) for i in range(300)] + ["a different sentence about paper windows and markets"]
    matches = find_duplicates(rows)
    assert [(m.index, m.of, m.kind) for m in matches] == [(i, 0, "near") for i in range(1, 300)]


def test_prepare_stage_reports_token_lengths_and_the_html_shows_them(tiny_model_dir: Path, tmp_path: Path) -> None:
    from tests.helpers.cli import run_cli
    from tests.helpers.configs import write_tiny_config
    from tunesmith.core.rundir import RunDir
    from tunesmith.pipeline.report import write_report

    config = write_tiny_config(tmp_path, tiny_model_dir)
    result = run_cli("prepare", str(config))
    assert result.returncode == 0, result.stderr
    run = RunDir(tmp_path / "runs" / "tiny")
    report = json.loads((run.data / "report.json").read_text())
    assert set(report["tokens"]) == {"train", "test"} and report["tokens"]["train"]["count"] == report["rows"]["train"]
    assert sum(b["rows"] for b in report["tokens"]["test"]["histogram"]) == report["rows"]["test"]
    assert report["train_tokens_per_epoch"] == report["tokens"]["train"]["trained"] > 0
    html = write_report(run).read_text()
    assert 'id="token-histograms"' in html and "training tokens per epoch" in html
    assert f"<b>{report['train_tokens_per_epoch']:,}</b>" in html


def test_a_broken_file_stops_prepare_with_nothing_written(tiny_model_dir: Path, tmp_path: Path) -> None:
    import gzip

    from tests.helpers.cli import run_cli_in_process
    from tests.helpers.configs import write_tiny_config

    rows = "".join(json.dumps(chat(f"question {i}")) + "\n" for i in range(20_000))
    broken = tmp_path / "cut.jsonl.gz"
    broken.write_bytes(gzip.compress(rows.encode())[:-2000])
    config = write_tiny_config(tmp_path, tiny_model_dir, data={"train": str(broken), "prompt_template": None})
    result = run_cli_in_process("prepare", str(config))
    assert result.returncode != 0 and "cut.jsonl.gz: cannot be read" in result.stderr + result.stdout
    assert not (tmp_path / "runs" / "tiny" / "data").exists()
