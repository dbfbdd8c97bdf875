"""The studio's security: nothing outside its workspace is read or written (``..``, absolute paths, symlinks out), on
every endpoint that takes a file or a run; a token when bound beyond loopback; foreign ``Origin`` and ``Host``
refused; request and upload bodies size-limited. In-process (FastAPI's TestClient), and one real `tunesmith studio`
process bound to 0.0.0.0."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.helpers.cli import free_port
from tunesmith.studio.app import create_app
from tunesmith.studio.context import Settings

SECRET = "the secret outside the workspace"
LOCAL = "http://127.0.0.1:7860"


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A workspace, and beside it a folder with a data file, a run directory and a secret; links point out."""
    root = tmp_path_factory.mktemp("confined")
    workspace, outside = root / "workspace", root / "outside"
    workspace.mkdir()
    (outside / "run").mkdir(parents=True)
    row = {"text": SECRET, "label": "positive"}
    (outside / "secret.jsonl").write_text(json.dumps(row) + "\n" + json.dumps(row | {"label": "negative"}) + "\n")
    (outside / "run" / "config.yaml").write_text("model: {name: x}\n")
    (workspace / "link.jsonl").symlink_to(outside / "secret.jsonl")
    (workspace / "linkdir").symlink_to(outside, target_is_directory=True)
    (workspace / "ok.jsonl").write_text(json.dumps({"text": "inside", "label": "positive"}) + "\n")
    return workspace, outside


@pytest.fixture(scope="module")
def client(places: tuple[Path, Path]) -> Iterator[TestClient]:
    app = create_app(Settings(workspace=places[0], max_upload_bytes=4000), workers=False)
    with TestClient(app, base_url=LOCAL) as c:
        yield c


def escapes(outside: Path) -> dict[str, str]:
    return {
        "dotdot": "../outside/secret.jsonl",
        "absolute": str(outside / "secret.jsonl"),
        "symlink": "link.jsonl",
        "symlinked folder": "linkdir/secret.jsonl",
        "home": "~/../../../etc/passwd",
    }


def requests_for(path: str) -> dict[str, tuple[str, str, dict]]:
    """Every endpoint that takes a file, a run or a model path, called with ``path``."""
    values = {"model.name": "ok", "data.train": path}
    model_values = {"model.name": path, "data.train": "ok.jsonl"}
    return {
        "annotate rows": ("GET", "/api/annotate/rows", {"params": {"file": path, "labels": "positive,negative"}}),
        "annotate audit": ("GET", "/api/annotate/rows", {"params": {"file": "ok.jsonl", "audit": path}}),
        "annotate label": (
            "POST",
            "/api/annotate/label",
            {"json": {"file": path, "row": 0, "text_hash": "x", "expected": "positive", "label": "negative"}},
        ),
        "annotate agreement": ("GET", "/api/annotate/agreement", {"params": {"file": "ok.jsonl", "other": path}}),
        "data check": ("GET", "/api/data/check", {"params": {"file": path}}),
        "data check model": ("GET", "/api/data/check", {"params": {"file": "ok.jsonl", "model": path}}),
        "data preview": ("GET", "/api/data/preview", {"params": {"file": path, "model": "x"}}),
        "data audit": ("POST", "/api/data/audit", {"json": {"file": path}}),
        "new run launch": ("POST", "/api/new/launch", {"json": {"values": values}}),
        "new run estimate": ("POST", "/api/new/estimate", {"json": {"values": values}}),
        "new run model": ("POST", "/api/new/launch", {"json": {"values": model_values}}),
        "new run judge model": (
            "POST",
            "/api/new/launch",
            {"json": {"values": {**model_values, "model.name": "ok", "eval.grading.judge_model": path}}},
        ),
        "new run translation model": (
            "POST",
            "/api/new/launch",
            {"json": {"values": {**model_values, "model.name": "ok", "data.augment.translate_to": path}}},
        ),
        "playground prompts": ("GET", "/api/playground/prompts", {"params": {"file": path}}),
        "run detail": ("GET", "/api/runs/detail", {"params": {"key": str(Path(path).parent / "run")}}),
        "run report": ("GET", "/api/runs/report", {"params": {"key": str(Path(path).parent / "run")}}),
        "run stream": ("GET", "/api/runs/stream", {"params": {"key": str(Path(path).parent / "run")}}),
        "compare": ("GET", "/api/compare", {"params": {"keys": [str(Path(path).parent / "run"), "ok"]}}),
        "ship export": ("POST", "/api/ship/export", {"json": {"key": str(Path(path).parent / "run")}}),
        "ship serve": ("POST", "/api/ship/serve", {"json": {"key": str(Path(path).parent / "run")}}),
    }


@pytest.mark.parametrize("way", ["dotdot", "absolute", "symlink", "symlinked folder", "home"])
def test_no_endpoint_reaches_outside_the_workspace(client: TestClient, places: tuple[Path, Path], way: str) -> None:
    workspace, outside = places
    path = escapes(outside)[way]
    before = {p: p.read_bytes() for p in outside.rglob("*") if p.is_file()}
    for name, (method, url, kwargs) in requests_for(path).items():
        if way == "symlink" and name.startswith("run"):
            continue  # link.jsonl's parent is the workspace itself: no run there, not an escape
        if way == "symlink" and name in ("compare", "ship export", "ship serve"):
            continue
        response = client.request(method, url, **kwargs)
        assert response.status_code == 403, f"{name} with {path!r}: {response.status_code} {response.text[:300]}"
        assert "outside the workspace" in response.json()["error"], name
        assert SECRET not in response.text, name
    assert {p: p.read_bytes() for p in outside.rglob("*") if p.is_file()} == before  # nothing written out there
    assert not list(workspace.glob("*.audit.json"))


def test_a_data_mix_naming_more_files_is_not_launched(client: TestClient) -> None:
    values = {"model.name": "ok", "data.train": "ok.jsonl", "data.mix": [{"name": "b", "train": "../outside/x"}]}
    refused = client.post("/api/new/launch", json={"values": values})
    assert refused.status_code == 400 and "data.mix" in refused.json()["error"]


def test_files_inside_the_workspace_still_open(client: TestClient) -> None:
    shown = client.get("/api/data/check", params={"file": "ok.jsonl"})
    assert shown.status_code == 200 and shown.json()["rows"] == 1
    listed = client.get("/api/data/files").json()["files"]
    assert "ok.jsonl" in listed and not any("secret" in f for f in listed)


def test_an_upload_cannot_name_its_way_out(client: TestClient, places: tuple[Path, Path]) -> None:
    workspace, outside = places
    files = {"file": ("../../outside/evil.jsonl", b'{"text": "x"}\n', "application/json")}
    saved = client.post("/api/data/upload", files=files)
    assert saved.status_code == 200, saved.text
    assert saved.json()["file"].startswith("uploads/") and (workspace / saved.json()["file"]).is_file()
    assert not (outside / "evil.jsonl").exists()


def test_uploads_over_the_limit_are_refused(client: TestClient, places: tuple[Path, Path]) -> None:
    workspace = places[0]
    big = b'{"text": "' + b"x" * 5000 + b'"}\n'
    refused = client.post("/api/data/upload", files={"file": ("big.jsonl", big, "application/json")})
    assert refused.status_code == 413 and "over the limit of 4,000 bytes" in refused.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is counted as the body streams in
        yield b"--b\r\ncontent-disposition: form-data; name=file; filename=chunked.jsonl\r\n\r\n"
        for _ in range(10):
            yield b"y" * 1000
        yield b"\r\n--b--\r\n"

    headers = {"content-type": "multipart/form-data; boundary=b"}
    streamed = client.post("/api/data/upload", content=chunks(), headers=headers)
    assert streamed.status_code == 413
    uploaded = [p.name for p in (workspace / "uploads").glob("*")]
    assert not [name for name in uploaded if "big" in name or "chunked" in name]
    small = client.post("/api/data/upload", files={"file": ("small.jsonl", b'{"text": "y"}\n', "application/json")})
    assert small.status_code == 200


def test_other_request_bodies_have_a_smaller_limit(client: TestClient) -> None:
    body = {"yaml": "model: {name: x}\n# " + "z" * (2**20 + 10)}
    refused = client.post("/api/new/load", json=body)
    assert refused.status_code == 413


def test_foreign_origin_and_host_are_refused(client: TestClient) -> None:
    body = {"file": "ok.jsonl", "row": 0, "text_hash": "x", "expected": "positive", "label": "negative"}
    cross = client.post("/api/annotate/label", json=body, headers={"origin": "http://evil.example"})
    assert cross.status_code == 403 and "evil.example" in cross.json()["error"]
    other_port = client.post("/api/annotate/label", json=body, headers={"origin": "http://127.0.0.1:9999"})
    assert other_port.status_code == 403
    fetched = client.post("/api/annotate/label", json=body, headers={"sec-fetch-site": "cross-site"})
    assert fetched.status_code == 403
    rebound = client.get("/api/data/files", headers={"host": "attacker.example:7860"})
    assert rebound.status_code == 403 and "DNS rebinding" in rebound.json()["error"]
    # The studio's own page: same origin, allowed.
    own = client.get("/api/data/files", headers={"origin": LOCAL})
    assert own.status_code == 200
    assert client.get("/api/data/files", headers={"host": "localhost:7860"}).status_code == 200


def test_a_token_guards_every_request(places: tuple[Path, Path]) -> None:
    app = create_app(Settings(workspace=places[0], host="0.0.0.0", token="s3cret-token"), workers=False)
    with TestClient(app, base_url="http://10.1.2.3:7860", follow_redirects=False) as c:
        for url in ("/data", "/api/data/files", "/static/studio.css"):
            assert c.get(url).status_code == 401, url
        assert c.get("/api/data/files", headers={"authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/api/data/files", headers={"authorization": "Bearer s3cret-token"}).status_code == 200
        opened = c.get("/data?token=s3cret-token")
        assert opened.status_code == 303 and opened.headers["location"] == "/data"  # the token leaves the address
        assert "HttpOnly" in opened.headers["set-cookie"] and "SameSite=Strict" in opened.headers["set-cookie"]
        assert c.get("/api/data/files").status_code == 200  # the cookie from now on


def test_studio_bound_beyond_loopback_makes_and_requires_a_token(tmp_path: Path) -> None:
    port = free_port()
    exe = Path(sys.executable).with_name("tunesmith")
    args = [str(exe), "studio", "--workspace", str(tmp_path), "--host", "0.0.0.0", "--port", str(port)]
    log = tmp_path / "studio.log"
    with log.open("wb") as handle:
        process = subprocess.Popen([*args, "--workers", "0"], stderr=handle, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        deadline = time.monotonic() + 60
        while not (found := re.search(r"\?token=([\w-]+)", log.read_text())):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        token = found.group(1)
        url = f"http://127.0.0.1:{port}"
        while True:
            try:
                refused = httpx.get(f"{url}/api/data/files", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        assert refused.status_code == 401 and "token" in refused.json()["error"]
        with httpx.Client(base_url=url, follow_redirects=True) as browser_like:
            page = browser_like.get(f"/data?token={token}")
            assert page.status_code == 200 and "Data" in page.text
            assert browser_like.get("/api/data/files").status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
