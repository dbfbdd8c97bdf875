"""The studio's Annotate page: in a real headless Chromium (Playwright), and its save path under concurrency."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tunesmith.data.labelfile import LabelSet
from tunesmith.studio.app import create_app
from tunesmith.studio.context import Settings
from tunesmith.studio.store import Change, Conflict, apply_change, load_rows, text_hash

ROWS = [
    {"text": "a warm, funny and moving film", "label": "positive"},
    {"text": "dull, slow and far too long", "label": "negative"},
    {"text": "the plot twists kept me guessing", "label": "positive", "label_source": "model", "confidence": 0.91},
    {
        "text": "i wanted to walk out early",
        "label": "positive",
        "label_source": "model",
        "confidence": 0.52,
    },
    {"text": "an uneven but charming debut", "label": None},
    {"text": "the cast seems bored throughout", "label": None},
]


def studio_client(workspace: Path) -> TestClient:
    """The studio in-process (no workers), confined to ``workspace``."""
    app = create_app(Settings(workspace=workspace), workers=False)
    return TestClient(app, base_url="http://127.0.0.1:7860")


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def file_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def trail(path: Path) -> list[dict]:
    target = path.parent / "annotations.jsonl"
    return file_rows(target) if target.is_file() else []


def open_file(page: object, url: str, path: Path, labels: str = "positive,negative", annotator: str = "alice") -> None:
    page.goto(f"{url}/annotate")
    page.fill("#file", str(path))
    page.fill("#labels", labels)
    page.fill("#annotator", annotator)
    page.click("#open-button")


def test_change_two_labels_with_the_keyboard_and_find_them_after_reload(studio_url, browser, tmp_path) -> None:
    data = write_rows(tmp_path / "reviews.jsonl", ROWS)
    page = browser.new_page()
    open_file(page, studio_url, data)
    page.wait_for_selector("li.row.current")
    # Most needed first: unlabelled rows, then the model's least confident label, people's labels last.
    order = page.eval_on_selector_all("li.row", "rows => rows.map(r => Number(r.dataset.row))")
    assert order[:3] == [4, 5, 3] and set(order[3:]) == {0, 1, 2}
    assert "Reviewed 0 of 6" in page.inner_text("#progress")

    page.keyboard.press("1")  # row 4 (unlabelled) -> positive
    page.wait_for_selector("text=saved line 5")
    page.keyboard.press("2")  # row 5 (unlabelled) -> negative
    page.wait_for_selector("text=saved line 6")
    assert "Reviewed 2 of 6" in page.inner_text("#progress")

    page.reload()  # the URL keeps the file open
    page.wait_for_selector("li.row.current")
    shown = dict(page.eval_on_selector_all("li.row", "rows => rows.map(r => [Number(r.dataset.row), r.dataset.label])"))
    assert shown[4] == "positive" and shown[5] == "negative"
    assert "Reviewed 2 of 6" in page.inner_text("#progress")

    saved = file_rows(data)
    assert (saved[4]["label"], saved[4]["label_source"], saved[4]["annotator"]) == ("positive", "human", "alice")
    assert (saved[5]["label"], saved[5]["label_source"]) == ("negative", "human")
    assert saved[:4] == ROWS[:4]  # nothing else touched
    entries = trail(data)
    assert [(e["row"], e["old_label"], e["new_label"], e["annotator"]) for e in entries] == [
        (4, None, "positive", "alice"),
        (5, None, "negative", "alice"),
    ]
    assert all(e["source"] == "human" and e["time"] and e["file"] == "reviews.jsonl" for e in entries)
    page.close()


def test_two_tabs_saving_at_once_lose_nothing(studio_url, browser, tmp_path) -> None:
    data = write_rows(tmp_path / "reviews.jsonl", ROWS)
    tab_a, tab_b = browser.new_page(), browser.new_page()
    open_file(tab_a, studio_url, data, annotator="alice")
    open_file(tab_b, studio_url, data, annotator="bob")
    tab_a.wait_for_selector("li.row.current")
    tab_b.wait_for_selector("li.row.current")

    # Different rows at the same moment: both saves land (each re-reads the file under a lock).
    tab_b.keyboard.press("j")  # bob moves to the second row (row 5) while alice stays on row 4
    tab_a.keyboard.press("1")
    tab_b.keyboard.press("2")
    tab_a.wait_for_selector("text=saved line 5")
    tab_b.wait_for_selector("text=saved line 6")
    saved = file_rows(data)
    assert (saved[4]["label"], saved[5]["label"]) == ("positive", "negative")

    # The same row from a tab that has not seen the other's change: refused with a clear message, nothing lost.
    tab_b.keyboard.press("k")  # after saving, bob's tab moved on to the third row: back to the first (row 4),
    tab_b.keyboard.press("k")  # which his tab still shows as unlabelled
    assert tab_b.get_attribute("li.row.current", "data-row") == "4"
    tab_b.keyboard.press("2")
    tab_b.wait_for_selector(".message.error")
    message = tab_b.inner_text("#message")
    assert "was changed to 'positive' by alice" in message and "was not saved" in message
    assert file_rows(data)[4]["label"] == "positive"  # alice's label kept
    assert sorted(e["annotator"] for e in trail(data)) == ["alice", "bob"]  # the two saves raced: either order
    # Bob's tab now shows the current label and he can decide again.
    tab_b.wait_for_selector("li.row[data-row='4'][data-label='positive']")
    tab_a.close()
    tab_b.close()


def test_file_without_text_column_gives_a_clear_message(studio_url, browser, tmp_path) -> None:
    data = write_rows(tmp_path / "bad.jsonl", [{"review": "good", "label": "positive"}] * 3)
    before = data.read_bytes()
    page = browser.new_page()
    open_file(page, studio_url, data)
    page.wait_for_selector(".message.error")
    message = page.inner_text("#message")
    assert str(data) in message and "no text column" in message and "review" in message
    assert page.query_selector_all("li.row") == []
    assert data.read_bytes() == before
    page.close()


def test_label_outside_the_set_is_refused_and_flagged(tmp_path) -> None:
    data = write_rows(tmp_path / "reviews.jsonl", [*ROWS, {"text": "meh", "label": "neutral"}])
    before = data.read_bytes()
    client = studio_client(tmp_path)
    shown = client.get("/api/annotate/rows", params={"file": str(data), "labels": "positive,negative"}).json()
    flagged = [r["row"] for r in shown["rows"] if r["outside_label_set"]]
    assert flagged == [6]
    row = next(r for r in shown["rows"] if r["row"] == 0)
    body = {"file": str(data), "labels": "positive,negative", "row": 0, "text_hash": row["text_hash"]}
    response = client.post("/api/annotate/label", json=body | {"expected": "positive", "label": "great"})
    assert response.status_code == 400
    assert "label 'great' is not in the label set; expected one of positive, negative" in response.json()["error"]
    assert data.read_bytes() == before and not trail(data)


def test_concurrent_saves_of_different_rows_all_land(tmp_path) -> None:
    rows = [{"text": f"review number {i}", "label": None} for i in range(24)]
    data = write_rows(tmp_path / "many.jsonl", rows)
    labels = LabelSet.parse("positive,negative")

    def save(i: int) -> dict:
        change = Change(i, text_hash(rows[i]["text"]), None, labels.values[i % 2], f"annotator-{i % 3}")
        return apply_change(data, labels, change)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(save, range(24)))
    saved = file_rows(data)
    assert [r["label"] for r in saved] == [labels.values[i % 2] for i in range(24)]
    assert sorted(e["row"] for e in trail(data)) == list(range(24))
    with pytest.raises(Conflict, match="was changed to 'positive'"):
        apply_change(data, labels, Change(0, text_hash(rows[0]["text"]), None, "negative", "late"))


def test_agreement_between_two_annotators_is_cohens_kappa(tmp_path) -> None:
    rows = [{"text": f"row {i}", "label": None} for i in range(4)]
    data = write_rows(tmp_path / "pair.jsonl", rows)
    labels = LabelSet.parse("pos,neg")
    alice, bob = ["pos", "neg", "pos", "neg"], ["pos", "neg", "neg", "neg"]
    for i in range(4):
        h = text_hash(rows[i]["text"])
        apply_change(data, labels, Change(i, h, None, alice[i], "alice"))
        apply_change(data, labels, Change(i, h, alice[i], bob[i], "bob"))
    # observed agreement 3/4; chance agreement 1/2 * 1/4 + 1/2 * 3/4 = 1/2; kappa = (0.75 - 0.5) / 0.5
    (pair,) = load_rows(data, labels)["agreement"]
    assert (pair["a"], pair["b"], pair["rows"], pair["kappa"], pair["agreement"]) == ("alice", "bob", 4, 0.5, 0.75)


def test_likely_errors_from_the_audit_come_first_and_reviewed_rows_last(tmp_path: Path) -> None:
    data = write_rows(tmp_path / "reviews.jsonl", ROWS)
    issue = {"index": 1, "line": 2, "text": ROWS[1]["text"], "label": "negative", "suggested": "positive"}
    (tmp_path / "reviews.jsonl.audit.json").write_text(json.dumps({"label_issues": {"rows": [issue]}}))
    client = studio_client(tmp_path)
    shown = client.get("/api/annotate/rows", params={"file": str(data), "labels": "positive,negative"}).json()
    assert [r["row"] for r in shown["rows"]][:4] == [1, 4, 5, 3]
    assert shown["rows"][0]["suggested"] == "positive" and shown["progress"]["flagged"] == 1
    first = shown["rows"][0]
    body = {"file": str(data), "row": 1, "text_hash": first["text_hash"], "expected": "negative", "label": "positive"}
    assert client.post("/api/annotate/label", json=body).status_code == 200
    again = client.get("/api/annotate/rows", params={"file": str(data), "labels": "positive,negative"}).json()
    assert again["rows"][-1]["row"] == 1 and again["rows"][-1]["reviewed"] and again["progress"]["reviewed"] == 1
    # Without a label set, the one in the file is used; a file with a single label cannot tell it.
    inferred = client.get("/api/annotate/rows", params={"file": str(tmp_path / "reviews.jsonl")})
    assert inferred.status_code == 400 and "give the labels" in inferred.json()["error"]


def test_agreement_with_a_second_annotators_file_in_the_page(studio_url, browser, tmp_path) -> None:
    mine = write_rows(tmp_path / "mine.jsonl", [{"text": f"row {i}", "label": y} for i, y in enumerate("ppnn")])
    theirs = write_rows(tmp_path / "theirs.jsonl", [{"text": f"row {i}", "label": y} for i, y in enumerate("pnnn")])
    page = browser.new_page()
    open_file(page, studio_url, mine, labels="p,n")
    page.wait_for_selector("li.row.current")
    page.fill("#other", str(theirs))
    page.keyboard.press("Enter")
    page.wait_for_selector("text=Cohen's κ 0.50")
    assert "75% same" in page.inner_text("#compared") and "on 4 rows" in page.inner_text("#compared")
    page.close()
