"""Shared fixtures of the studio tests: one studio (a real uvicorn on loopback, with a worker thread running its
jobs) whose workspace is pytest's base temporary folder, so every test's ``tmp_path`` and the tiny models lie inside
it; one headless Chromium; and a folder for the page screenshots (``$TUNESMITH_ARTIFACTS``, else a temp folder)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.cli import free_port


@dataclass
class Running:
    url: str
    workspace: Path


def start_studio(workspace: Path, workers: int = 1, **settings: object) -> tuple[object, threading.Thread, str]:
    """A studio on a free loopback port in a thread of this process; returns (server, thread, url)."""
    import uvicorn

    from tunesmith.studio.app import create_app
    from tunesmith.studio.context import Settings

    port = free_port()
    app = create_app(Settings(workspace=workspace, workers=workers, **settings))  # type: ignore[arg-type]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the studio did not start"
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One studio for the whole session, its workspace pytest's base temp folder."""
    before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = before or "1"  # the jobs' runs share two cores with the server and Chromium
    workspace = tmp_path_factory.getbasetemp()
    server, thread, url = start_studio(workspace)
    try:
        yield Running(url, workspace)
    finally:
        server.should_exit = True  # type: ignore[attr-defined]
        thread.join(timeout=120)
        if before is None:
            os.environ.pop("OMP_NUM_THREADS", None)


@pytest.fixture(scope="session")
def studio_url(studio: Running) -> str:
    return studio.url


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the studio tests drive Chromium with Playwright: pip install -e '.[dev]'")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Chromium is needed for this test; `make browser` installs Debian's chromium package"
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where page screenshots go: ``$TUNESMITH_ARTIFACTS/studio`` (CI keeps it), else a temp folder."""
    given = os.environ.get("TUNESMITH_ARTIFACTS")
    folder = Path(given) / "studio" if given else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def screenshot(page: object, artifacts: Path, name: str) -> Path:
    """A PNG of the page's viewport, named after it."""
    path = artifacts / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)  # type: ignore[attr-defined]
    return path
