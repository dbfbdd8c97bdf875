"""Every studio page in a real headless Chromium, on the session's studio (its jobs run by its worker thread) with the
tiny Llama: Data shows a malformed file's lines; New run launches a run through the jobs service; a run's curve gains
points live and the run is cancelled; Compare shows two runs; blind A/B judgments give a win rate and a preference
file that a dpo run trains on; Ship exports; paths outside the workspace are refused. Each page is screenshotted.

The tests share module-scoped runs and follow the workflow in file order (a later page needs the runs of an earlier
one); each also makes sense alone, as its fixtures make what it needs."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers.jobs import chat_file
from tests.helpers.paths import SST2
from tests.studio.conftest import Running, screenshot

FINAL = ("succeeded", "failed", "cancelled")
RUN_TIMEOUT_MS = 240_000  # a tiny run through a worker: ~20 s alone, more on two busy cores


def wait_status(page: object, wanted: tuple[str, ...], timeout_ms: int = RUN_TIMEOUT_MS) -> str:
    """Wait until the run page's status badge shows one of ``wanted``; return it."""
    page.wait_for_function(  # type: ignore[attr-defined]
        "wanted => wanted.includes(document.getElementById('status').textContent.trim())",
        arg=list(wanted),
        timeout=timeout_ms,
    )
    return page.inner_text("#status").strip()  # type: ignore[attr-defined]


def loss_points(page: object) -> int:
    return int(page.get_attribute("#loss-chart", "data-pointsloss") or 0)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def files(studio: Running, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The tiny model and a chat data file, as paths relative to the workspace."""
    folder = tmp_path_factory.mktemp("pages")
    data = chat_file(folder / "chat.jsonl", 32)
    prompts = folder / "prompts.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"Sentiment of: film number {i}"}]} for i in range(10)]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    rel = lambda p: p.relative_to(studio.workspace).as_posix()  # noqa: E731
    return {"model": rel(tiny_model_dir), "data": rel(data), "prompts": rel(prompts)}


@pytest.fixture(scope="module")
def first_run(studio: Running, browser, files: dict[str, str], artifacts: Path) -> dict[str, object]:
    """A run launched from the New run form and followed to its end on its page."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{studio.url}/new")
    page.wait_for_selector('[name="model.name"]')
    page.fill('[name="model.name"]', files["model"])
    page.fill('[name="data.train"]', files["data"])
    page.fill('[name="training.max_steps"]', "20")
    page.fill('[name="training.batch_size"]', "4")
    page.fill('[name="training.max_seq_len"]', "64")
    page.fill('[name="training.learning_rate"]', "0.01")  # the tuned model answers unlike its base: A/B has pairs
    page.uncheck('[name="eval.enabled"]')
    page.fill('[name="output.name"]', "first")
    page.click("#check")
    page.wait_for_selector("#message.info >> text=The config is valid.")
    shown_yaml = page.inner_text("#yaml")
    screenshot(page, artifacts, "new-run")
    page.click("#launch")
    page.wait_for_url(re.compile(r"/runs/view\?key=ftjob-"), timeout=30_000)
    key = page.get_attribute("#run-name", "data-key")
    status = wait_status(page, FINAL)
    page.wait_for_function("document.getElementById('loss-chart').dataset.pointsloss === '20'", timeout=30_000)
    result = {"key": key, "status": status, "yaml": shown_yaml, "points": loss_points(page), "url": page.url}
    page.close()
    return result


@pytest.fixture(scope="module")
def watched_run(studio: Running, browser, files: dict[str, str], first_run, artifacts: Path) -> dict[str, object]:
    """A long run (launched by the API) watched on its page while its curve grows, then cancelled there."""
    values = {"model.name": files["model"], "data.train": files["data"], "training.max_steps": 5000}
    values |= {"training.batch_size": 4, "training.max_seq_len": 64, "eval.enabled": False, "output.name": "long"}
    launched = httpx.post(f"{studio.url}/api/new/launch", json={"values": values}, timeout=60)
    assert launched.status_code == 200, launched.text
    key = launched.json()["job"]
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{studio.url}/runs/view?key={key}")
    page.wait_for_function("Number(document.getElementById('loss-chart').dataset.pointsloss || 0) > 0", timeout=120_000)
    seen = [loss_points(page)]
    page.wait_for_function(
        f"Number(document.getElementById('loss-chart').dataset.pointsloss || 0) > {seen[0]}", timeout=30_000
    )
    seen.append(loss_points(page))
    progress = page.inner_text("#progress")
    screenshot(page, artifacts, "run")
    page.wait_for_selector("#pause:not([hidden])")
    page.click("#pause")  # a checkpoint, and the job waits
    paused = wait_status(page, ("paused", *FINAL), 60_000)
    at_pause = loss_points(page)
    page.wait_for_selector("#resume:not([hidden])")
    page.click("#resume")  # queued again; the worker resumes it from the checkpoint and the curve goes on
    page.wait_for_function(
        f"Number(document.getElementById('loss-chart').dataset.pointsloss || 0) > {at_pause}", timeout=120_000
    )
    seen.append(loss_points(page))
    page.wait_for_selector("#cancel:not([hidden])")
    page.click("#cancel")
    status = wait_status(page, FINAL, 60_000)
    result = {"key": key, "seen": seen, "progress": progress, "paused": paused, "status": status}
    page.close()
    return result


def test_data_page_shows_a_malformed_files_problems_with_their_lines(studio: Running, browser, tmp_path, artifacts):
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    lines = [json.dumps(good), json.dumps(good), '{"messages": [', json.dumps(good), json.dumps({"messages": []})]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{studio.url}/data")
    page.fill("#file", bad.relative_to(studio.workspace).as_posix())
    page.click("#check-button")
    page.wait_for_selector("#result:not([hidden])")
    malformed = page.locator('details[data-kind="malformed_json"] li')
    assert malformed.count() == 1 and "line 3" in malformed.inner_text()
    assert "line 5" in page.inner_text("#groups")
    assert "5 rows" in page.inner_text("#summary") and "3 usable" in page.inner_text("#summary")
    screenshot(page, artifacts, "data")
    page.close()


def test_data_page_counts_tokens_and_shows_what_is_trained(studio: Running, browser, files) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{studio.url}/data?file={files['data']}&model={files['model']}")
    page.wait_for_selector("#preview .example")
    assert int(page.get_attribute("#histogram", "data-bins") or 0) > 0
    assert "median" in page.inner_text("#tokens-note")
    trained = page.locator("#preview .example").first.locator("mark").all_inner_texts()
    assert any(word in "".join(trained) for word in ("positive", "negative"))  # the reply is trained
    assert "Sentiment of" not in "".join(trained)  # the prompt is not
    page.close()


def test_the_audit_sends_its_flagged_rows_to_annotate_first(studio: Running, browser, tmp_path, artifacts) -> None:
    lines = (SST2 / "train.tsv").read_text(encoding="utf-8").splitlines()[1:41]
    rows = [{"text": t, "label": "positive" if y == "1" else "negative"} for t, y in (x.split("\t") for x in lines)]
    reviews = tmp_path / "reviews.jsonl"
    reviews.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{studio.url}/data?file={reviews.relative_to(studio.workspace).as_posix()}")
    page.wait_for_selector("#result:not([hidden])")
    page.click("#audit-button")
    page.wait_for_selector("#to-annotate", timeout=120_000)
    audit = json.loads((tmp_path / "reviews.jsonl.audit.json").read_text())
    flagged = [r["index"] for r in audit["label_issues"]["rows"]]
    assert flagged and page.locator("#label-issues tr[data-line]").count() == len(flagged)
    page.click("#to-annotate")
    page.wait_for_selector("li.row.current")
    assert page.get_attribute("li.row.current", "data-row") == str(flagged[0])  # the likely error comes first
    screenshot(page, artifacts, "annotate")
    page.close()


def test_paths_outside_the_workspace_are_refused_in_the_pages(studio: Running, browser) -> None:
    page = browser.new_page()
    page.goto(f"{studio.url}/data?file=../../../../etc/passwd")
    page.wait_for_selector("#message.error")
    assert "outside the workspace" in page.inner_text("#message")
    assert page.is_hidden("#result")
    page.goto(f"{studio.url}/annotate")
    page.fill("#file", "/etc/passwd")
    page.fill("#labels", "a,b")
    page.click("#open-button")
    page.wait_for_selector(".message.error")
    assert "outside the workspace" in page.inner_text("#message")
    assert page.query_selector_all("li.row") == []
    page.close()


def test_new_run_form_launches_a_run_through_the_jobs_service(studio: Running, first_run, files) -> None:
    assert first_run["status"] == "succeeded"
    assert first_run["points"] == 20  # one point a step, all streamed to the page
    assert f"name: {files['model']}" in first_run["yaml"] and "max_steps: 20" in first_run["yaml"]
    job = httpx.get(f"{studio.url}/api/runs/detail", params={"key": first_run["key"]}).json()
    assert job["run"]["trained"] and job["run"]["job"] == first_run["key"]  # a job of the jobs service
    assert any("Run config checked" in m["message"] for m in job["messages"])


def test_a_runs_curve_gains_points_live_pauses_resumes_and_is_cancelled(watched_run) -> None:
    first, later, resumed = watched_run["seen"]
    assert 0 < first < later < resumed
    assert watched_run["paused"] == "paused"
    assert re.match(r"step [\d,]+ of 5,000", watched_run["progress"])
    assert watched_run["status"] == "cancelled"


def test_runs_page_lists_every_run_with_its_status(studio: Running, browser, first_run, watched_run, artifacts):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{studio.url}/runs")
    assert page.get_attribute(f'tr[data-key="{first_run["key"]}"]', "data-status") == "succeeded"
    assert page.get_attribute(f'tr[data-key="{watched_run["key"]}"]', "data-status") == "cancelled"
    screenshot(page, artifacts, "runs")
    page.click(f'tr[data-key="{first_run["key"]}"] a')
    page.wait_for_selector("#finished:not([hidden])")
    assert "python" in page.inner_text("#environment").lower()
    page.close()


def test_compare_two_runs(studio: Running, browser, first_run, watched_run, artifacts) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{studio.url}/compare")
    page.check(f'#run-list input[value="{first_run["key"]}"]')
    page.check(f'#run-list input[value="{watched_run["key"]}"]')
    page.click("#compare-button")
    page.wait_for_selector("#result:not([hidden])")
    diff = page.inner_text("#config-diff")
    assert "training.max_steps" in diff and "20" in diff and "5000" in diff
    assert int(page.get_attribute("#curves", "data-points") or 0) > 20  # both curves, overlaid
    page.close()


def shown(value: float, digits: int = 3) -> str:
    """A number as the page writes it (``digits`` decimals; whole numbers without)."""
    return str(int(value)) if float(value).is_integer() else f"{value:.{digits}f}"


def test_compare_shows_each_metric_with_its_change_and_interval(
    studio: Running, browser, tuned_run_dir: Path, first_run, artifacts
) -> None:
    cli_run = tuned_run_dir.relative_to(studio.workspace).as_posix()  # a run made with the CLI, evaluated
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{studio.url}/compare?keys={cli_run}&keys={first_run['key']}")
    page.wait_for_selector("#result:not([hidden])")
    comparison = json.loads((tuned_run_dir / "eval" / "comparison.json").read_text())["accuracy"]
    tuned = json.loads((tuned_run_dir / "eval" / "metrics.json").read_text())["tuned"]["accuracy"]
    cells = page.locator('#metrics tr[data-metric="accuracy"] td')
    low, high = comparison["ci95"]
    assert cells.nth(1).inner_text().startswith(shown(tuned, 4))
    delta = cells.nth(1).locator(".delta").inner_text()
    sign = "+" if comparison["delta"] >= 0 else ""
    assert delta == f"{sign}{shown(comparison['delta'])} [{shown(low)}, {shown(high)}]"
    assert cells.nth(2).inner_text() == "\u2013"  # a dash: the other run was not evaluated
    screenshot(page, artifacts, "compare")
    page.close()


def test_ten_blind_judgments_give_a_win_rate_and_preferences_a_dpo_run_trains_on(
    studio: Running, browser, first_run, files, artifacts
) -> None:
    tuned, base = first_run["key"], f"{first_run['key']}:base"
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{studio.url}/playground")
    page.wait_for_selector(f'#model-a option[value="{tuned}"]', state="attached")
    page.select_option("#model-a", tuned)
    page.select_option("#model-b", base)
    page.fill("#max-new-tokens", "8")
    page.fill("#prompt", "Sentiment of: a warm and funny film")  # side by side first: both replies streamed
    page.click("#send")
    page.wait_for_selector("#reply-a[data-done]")
    page.wait_for_selector("#reply-b[data-done]")
    assert page.inner_text("#reply-a") and page.inner_text("#reply-b")
    assert page.inner_text("#label-a") == "first" and "base" in page.inner_text("#label-b")
    screenshot(page, artifacts, "playground-side-by-side")
    page.check("#blind")
    page.fill("#prompts-file", files["prompts"])
    page.click("#load-prompts")
    page.wait_for_selector("#prompt-count >> text=prompt 1 of 10")
    page.click("#send")
    picks = [1, 2, 1, 1, 3, 2, 1, 1, 2, 1]  # the keyboard: 1 or 2 picks a reply, 3 is a tie
    for i, choice in enumerate(picks):
        page.wait_for_selector("#verdict:not([hidden])", timeout=60_000)
        if i == len(picks) - 1:
            screenshot(page, artifacts, "playground-blind")
        page.keyboard.press(str(choice))
        page.wait_for_function(
            "n => document.getElementById('message').textContent.startsWith(`Judgment ${n} saved`)", arg=i + 1
        )
    page.wait_for_selector('#standings tr.pair[data-n="10"]')

    judged = [json.loads(line) for line in (studio.workspace / "judgments/judgments.jsonl").read_text().splitlines()]
    judged = [j for j in judged if set(j["models"]) == {tuned, base}][-10:]
    assert [{"first": 1, "second": 2, "tie": 3}[j["choice"]] for j in judged] == picks
    a = min(tuned, base)  # the pair's first model, in the standings' order
    wins = sum(j["winner"] == a for j in judged) + 0.5 * sum(j["winner"] is None for j in judged)
    rate = page.inner_text("#standings tr.pair .rate")
    assert rate.startswith(f"{round(100 * wins / 10):.0f}% [")  # with its 95% interval
    preferences = (
        studio.workspace / "preferences" / f"{a.replace(':', '_')}__vs__{max(tuned, base).replace(':', '_')}.jsonl"
    )
    rows = [json.loads(line) for line in preferences.read_text().splitlines()]
    differing = [j for j in judged if j["winner"] is not None and j["replies"][0].strip() != j["replies"][1].strip()]
    assert len(rows) == len(differing) >= 2
    for row, j in zip(rows[-len(differing) :], differing, strict=True):
        winner = j["models"].index(j["winner"])
        assert row == {"prompt": j["prompt"], "chosen": j["replies"][winner], "rejected": j["replies"][1 - winner]}
    screenshot(page, artifacts, "playground")

    page.fill("#train-steps", "4")
    page.click("#train")
    page.wait_for_url(re.compile(r"/runs/view\?key=ftjob-"), timeout=30_000)
    assert wait_status(page, FINAL) == "succeeded"
    detail = httpx.get(f"{studio.url}/api/runs/detail", params={"key": page.get_attribute("#run-name", "data-key")})
    run = detail.json()["run"]
    assert (run["task"], run["trained"]) == ("dpo", True)
    job = httpx.get(f"{studio.url}/api/runs/list").json()["runs"]
    assert any(r["key"] == run["key"] and r["task"] == "dpo" for r in job)
    page.close()


def test_ship_exports_a_finished_run_with_its_checks(studio: Running, browser, first_run, artifacts) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{studio.url}/ship?key={first_run['key']}")
    page.wait_for_selector(f'#run option[value="{first_run["key"]}"]', state="attached")
    page.select_option("#run", first_run["key"])
    started = time.monotonic()
    page.click("#export")
    page.wait_for_selector("#export-done", timeout=120_000)
    assert float(page.inner_text("#logit-diff")) < 1e-3
    assert time.monotonic() - started < 120
    exported = [p for p in (studio.workspace / "exports").iterdir() if p.name.startswith("first-")]
    assert exported and any(exported[0].iterdir())
    screenshot(page, artifacts, "ship")
    page.close()


def test_ship_serves_a_run_and_stops_it(studio: Running, browser, first_run) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{studio.url}/ship?key={first_run['key']}")
    page.wait_for_selector(f'#run option[value="{first_run["key"]}"]', state="attached")
    page.select_option("#run", first_run["key"])
    page.click("#serve")
    page.wait_for_selector('#servers tr[data-state="ready"]', timeout=120_000)
    url = page.inner_text('#servers tr[data-state="ready"] code')
    models = httpx.get(f"{url}/models", timeout=30).json()["data"]
    assert models, "the served run lists its model"
    page.click('#servers tr[data-state="ready"] button.stop')
    page.wait_for_function(
        "() => [...document.querySelectorAll('#servers tr[data-state]')]"
        ".every(row => row.dataset.state.startsWith('stopped'))",
        timeout=30_000,
    )
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/models", timeout=5)
    page.close()


def test_a_cli_runs_curve_follows_its_metrics_file(studio: Running, browser) -> None:
    """A run made with `tunesmith run` in the workspace: its page follows the lines its metrics.jsonl gains."""
    folder = studio.workspace / "runs" / "cli-live"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("model: {name: tiny}\ndata: {train: chat.jsonl}\ntraining: {max_steps: 5}\n")
    (folder / "state.json").write_text(json.dumps({"stages": {"prepare": {"rows": {"train": 16}}}}))
    metrics = folder / "metrics.jsonl"

    def log(steps: range) -> None:
        with metrics.open("a", encoding="utf-8") as out:
            for step in steps:
                out.write(json.dumps({"step": step, "train_loss": 3.0 / step, "lr": 1e-4, "elapsed_s": step}) + "\n")

    log(range(1, 4))
    page = browser.new_page()
    page.goto(f"{studio.url}/runs/view?key=runs/cli-live")
    page.wait_for_function("document.getElementById('loss-chart').dataset.pointsloss === '3'")
    assert "step 3 of 5" in page.inner_text("#progress")
    log(range(4, 6))
    page.wait_for_function("document.getElementById('loss-chart').dataset.pointsloss === '5'", timeout=10_000)
    page.close()
