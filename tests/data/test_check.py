"""`tunesmith data check`: every problem kind is found once, at its line, and the exit code says so."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.cli import run_cli
from tests.helpers.configs import write_tiny_config
from tests.helpers.paths import SHARED
from tunesmith.core.config import DataConfig
from tunesmith.data.check import check_file

GOOD = {
    "messages": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello, how can I help?"}]
}


def _chat(*messages: dict) -> str:
    return json.dumps({"messages": list(messages)})


# line -> (kind, the JSON line); one instance of every kind OpenAI's validator checks, plus ours.
MALFORMED = {
    1: (None, json.dumps(GOOD)),
    2: ("malformed_json", '{"messages": [oops'),
    3: ("not_an_object", "[1, 2, 3]"),
    4: ("missing_field", '{"id": 4}'),
    5: ("message_missing_key", _chat({"role": "user"}, {"role": "assistant", "content": "a"})),
    6: (
        "unrecognized_key",
        _chat({"role": "user", "content": "q", "mood": "x"}, {"role": "assistant", "content": "a"}),
    ),
    7: ("unrecognized_role", _chat({"role": "robot", "content": "q"}, {"role": "assistant", "content": "a"})),
    8: ("empty_content", _chat({"role": "user", "content": "  "}, {"role": "assistant", "content": "a"})),
    9: ("no_assistant_message", _chat({"role": "user", "content": "only a question"})),
    10: ("wrong_type", _chat({"role": "user", "content": 42}, {"role": "assistant", "content": "a"})),
    11: ("invalid_utf8", None),
    12: ("exact_duplicate", json.dumps(GOOD)),
    13: ("pii", _chat({"role": "user", "content": "mail me"}, {"role": "assistant", "content": "at bo@example.org"})),
}


def write_malformed(path: Path) -> Path:
    lines = [text.encode() if text is not None else b'{"messages": "caf\xe9"}' for _kind, text in MALFORMED.values()]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_each_error_kind_is_reported_once_at_its_line(tmp_path: Path) -> None:
    result = check_file(str(write_malformed(tmp_path / "chat.jsonl")))
    found = {(p.kind, int(p.line)) for p in result.problems}
    expected = {(kind, line) for line, (kind, _) in MALFORMED.items() if kind}
    assert found == expected
    assert result.format == "messages" and result.rows == 13
    assert {p.kind for p in result.problems if p.severity == "warning"} == {"exact_duplicate", "pii"}


def test_labelled_file_problems(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("text,label\ngreat film,1\nawful,7\nno label here,\n   ,0\ntoo,many,fields\n", encoding="utf-8")
    result = check_file(str(path), DataConfig(train=str(path), label_names={0: "negative", 1: "positive"}))
    assert {(p.kind, int(p.line)) for p in result.problems} == {
        ("unknown_label", 3),
        ("missing_label", 4),
        ("empty_text", 5),
        ("wrong_field_count", 6),
    }
    assert result.format == "labeled" and result.valid_rows == 1


def test_cli_exit_codes_and_json(tmp_path: Path) -> None:
    bad = run_cli("data", "check", str(write_malformed(tmp_path / "chat.jsonl")))
    assert bad.returncode == 1, bad.stderr
    assert "error malformed_json (1):" in bad.stdout and "line 2:" in bad.stdout
    assert "10 error(s), 2 warning(s)" in bad.stdout

    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(GOOD) + "\n")
    ok = run_cli("data", "check", str(good), "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    report = json.loads(ok.stdout)
    assert report["errors"] == 0 and report["valid_rows"] == 1 and report["format"] == "messages"


def test_token_lengths_and_context_limit(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    path = tmp_path / "chat.jsonl"
    long = {"messages": [{"role": "user", "content": "word " * 300}, {"role": "assistant", "content": "ok"}]}
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(long) + "\n")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    result = check_file(str(path), tokenizer=tokenizer, max_tokens=100)
    assert [(p.kind, p.line) for p in result.problems] == [("too_long", "2")]
    assert result.tokens["count"] == 2 and result.tokens["max"] > 100 > result.tokens["min"]
    assert sum(b["rows"] for b in result.tokens["histogram"]) == 2


def test_overlap_with_another_file(tmp_path: Path) -> None:
    train, val = tmp_path / "train.jsonl", tmp_path / "val.jsonl"
    other = {"messages": [{"role": "user", "content": "Other question"}, {"role": "assistant", "content": "Other"}]}
    train.write_text(json.dumps(GOOD) + "\n" + json.dumps(other) + "\n")
    val.write_text(json.dumps(GOOD) + "\n")
    result = check_file(str(train), against=str(val))
    assert [(p.kind, p.line) for p in result.problems] == [("overlap", "1")]


def test_cli_preview_marks_exactly_the_trained_tokens(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = write_tiny_config(tmp_path, tiny_model_dir)
    result = run_cli("data", "preview", str(config), "--n", "2")
    assert result.returncode == 0, result.stderr
    marked = [line for line in result.stdout.splitlines() if "⟦" in line]
    assert len(marked) == 2
    assert all(line in ("⟦positive<|im_end|>⟧", "⟦negative<|im_end|>⟧") for line in marked)
    assert result.stdout.count("Sentiment of:") == 2 and "trained" in result.stdout


def test_cli_check_conll_with_explicit_reader() -> None:
    result = run_cli("data", "check", str(SHARED / "wnut17" / "emerging.test.annotated"), "--format", "conll", "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["format"] == "tagged" and report["valid_rows"] == 1287
