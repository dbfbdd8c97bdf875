"""The New run page's API in-process: the form offers only valid task/method pairs, the CLI's own validation messages
come back by field, a YAML file loads into the form and comes back as the same config (what `tunesmith run` reads),
and the estimate predicts memory and time for the tiny Llama."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from tests.helpers.jobs import chat_file
from tunesmith.core.config import validate_config
from tunesmith.studio.app import create_app
from tunesmith.studio.context import Settings


@pytest.fixture(scope="module")
def client(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    workspace = tmp_path_factory.mktemp("new-run")
    shutil.copytree(tiny_model_dir, workspace / "tiny")
    chat_file(workspace / "chat.jsonl", 16)
    with TestClient(create_app(Settings(workspace=workspace), workers=False), base_url="http://127.0.0.1") as c:
        yield c


def test_the_form_offers_only_the_methods_a_task_supports(client: TestClient) -> None:
    form = client.get("/api/new/form").json()
    pairs = form["task_methods"]
    assert "lora" in pairs["sft"] and "full" in pairs["sft"]
    assert set(pairs) >= {"sft", "dpo", "classify"}
    keys = {f["key"] for s in form["sections"] for f in s["fields"] if not f.get("group")}
    assert {"model.name", "data.train", "training.learning_rate", "eval.enabled"} <= keys
    assert "chat.jsonl" in form["files"]


def test_invalid_values_get_the_clis_messages_by_field(client: TestClient) -> None:
    values = {"model.name": "tiny", "data.train": "chat.jsonl", "training.learning_rate": -1, "eval.enabled": False}
    checked = client.post("/api/new/check", json={"values": values}).json()
    assert not checked["ok"]
    assert [p["key"] for p in checked["problems"]] == ["training.learning_rate"]
    assert "expected a positive number, got -1" in checked["problems"][0]["message"]
    missing = client.post("/api/new/check", json={"values": values | {"data.train": "nope.jsonl"}}).json()
    assert not missing["ok"] and "nope.jsonl" in missing["message"]


def test_a_yaml_file_round_trips_through_the_form(client: TestClient) -> None:
    text = (
        "model:\n  name: tiny\ndata:\n  train: chat.jsonl\n  columns: {text: review}\ntask:\n  name: sft\n"
        "method:\n  name: lora\n  lora:\n    r: 4\n"
        "training:\n  max_steps: 7\n  learning_rate: 0.001\neval:\n  enabled: false\n"
    )
    values = client.post("/api/new/load", json={"yaml": text}).json()["values"]
    assert values["training.max_steps"] == 7 and values["method.lora.r"] == 4
    checked = client.post("/api/new/check", json={"values": values}).json()
    assert checked["ok"], checked
    assert yaml.safe_load(checked["yaml"]) == yaml.safe_load(text)
    # The YAML shown is what `tunesmith run` validates (paths relative to the workspace it runs in).
    validate_config({**yaml.safe_load(checked["yaml"]), "output": {"dir": "runs", "name": "x"}}, source="form")
    bad = client.post("/api/new/load", json={"yaml": "model: [unclosed"})
    assert bad.status_code == 400 and "not valid YAML" in bad.json()["error"]


def test_estimate_predicts_memory_and_time(client: TestClient) -> None:
    values = {"model.name": "tiny", "data.train": "chat.jsonl", "training.max_steps": 5, "training.batch_size": 4}
    values |= {"training.max_seq_len": 64, "eval.enabled": False}
    estimate = client.post("/api/new/estimate", json={"values": values})
    assert estimate.status_code == 200, estimate.text
    found = estimate.json()
    assert found["peak_gib"] > 0 and found["seconds_per_epoch"] > 0 and 0 < found["trainable"] < found["parameters"]
