"""Fixtures for the shipping tests (export, predict, serve): a tiny run trained until it answers and stops."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, write_tiny_config

EOS_ID = 2  # <|im_end|> in the tiny tokenizer: the chat template's end of turn


@pytest.fixture(scope="session")
def eos_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny llama, but its config names another EOS (<|im_start|>) than its chat template's end of turn.

    Real base models do this (``<|endoftext|>`` vs ``<|im_end|>``); an export must still stop at the end of turn.
    """
    folder = tmp_path_factory.mktemp("tiny-llama-eos") / "model"
    shutil.copytree(tiny_model_dir, folder)
    for name in ("config.json", "generation_config.json"):
        path = folder / name
        config = json.loads(path.read_text())
        config["eos_token_id"] = 1
        path.write_text(json.dumps(config))
    return folder


def train_tiny_run(folder: Path, model_dir: Path, name: str, steps: int, seed: int = 42, evaluate: bool = True) -> Path:
    """Train a LoRA run on SST-2 with the tiny model; return its run directory."""
    from tunesmith.pipeline.run import Run

    config = write_tiny_config(
        folder,
        model_dir,
        data={"train_rows": 256},
        training={"max_steps": steps, "batch_size": 8, "learning_rate": 1e-2, "scheduler": "constant", "seed": seed},
        eval={"enabled": evaluate, "max_new_tokens": 8},
        output={"dir": str(folder / "runs"), "name": name},
    )
    run = Run.from_file(config)
    run.run()
    return run.dir.root


@pytest.fixture(scope="session")
def tuned_run_dir(eos_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished, evaluated run whose model answers 'positive' / 'negative' and then emits <|im_end|>."""
    return train_tiny_run(tmp_path_factory.mktemp("tuned"), eos_model_dir, "tuned", steps=40)


@contextlib.contextmanager
def serving(args: list[str], log: Path, timeout: float = 180) -> Iterator[str]:
    """`tunesmith serve ARGS --port P` in a real subprocess; yields its base URL once /health answers.

    On exit the server must still be alive with no traceback in its log; it is then stopped with Ctrl-C.
    """
    port = free_port()
    exe = Path(sys.executable).with_name("tunesmith")
    with log.open("w") as handle:
        command = [str(exe), "serve", *args, "--port", str(port)]
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start:\n" + log.read_text()
            time.sleep(0.3)
        yield url
        assert process.poll() is None, "the server died:\n" + log.read_text()
        assert "Traceback" not in log.read_text(), log.read_text()
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
