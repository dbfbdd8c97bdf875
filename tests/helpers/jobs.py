"""The jobs service for tests: a `tunesmith serve --jobs` process (and `tunesmith worker` processes) on a store,
keys made in this process, OpenAI-format JSONL files, and polling a job until it reaches a status."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai

from tests.helpers.cli import free_port
from tests.helpers.paths import SST2

# One thread per training process: two cores run the server, a worker and a run without oversubscription.
ENV = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


@dataclass
class Service:
    url: str
    home: Path
    keys: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes]

    def client(self, who: str = "alice") -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=self.keys[who], max_retries=0, timeout=120)


def make_keys(home: Path, store: str | None, *names: str) -> dict[str, str]:
    from tunesmith.jobs.keys import create_key
    from tunesmith.jobs.store import connect

    connected = connect(home, store)
    try:
        return {name: create_key(connected.engine, name) for name in names}
    finally:
        connected.close()


def _tunesmith(*args: str, log: Path) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).with_name("tunesmith")
    with log.open("ab") as handle:
        return subprocess.Popen([str(exe), *args], stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, **ENV})


@contextlib.contextmanager
def jobs_server(
    home: Path, store: str | None = None, workers: int = 1, keys: dict[str, str] | None = None, timeout: float = 120
) -> Iterator[Service]:
    """`tunesmith serve --jobs` with keys for alice and bob (made unless given); stopped with Ctrl-C at the end
    unless the test killed it."""
    keys = keys or make_keys(home, store, "alice", "bob")
    port, log = free_port(), home / "server.log"
    args = ["serve", "--jobs", "--home", str(home), "--workers", str(workers), "--port", str(port)]
    args += ["--max-upload-bytes", "200000", *(["--store", store] if store else [])]
    process = _tunesmith(*args, log=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert process.poll() is None, log.read_text()
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "server did not start:\n" + log.read_text()
            time.sleep(0.2)
        service = Service(url, home, keys, log, process)
        yield service
    finally:
        if process.poll() is None:
            stop(process)


def start_worker(home: Path, store: str | None, name: str, *args: str) -> subprocess.Popen[bytes]:
    options = ["--home", str(home), "--name", name, "--poll", "0.2", *(["--store", store] if store else [])]
    return _tunesmith("worker", *options, *args, log=home / f"worker-{name}.log")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def chat_file(path: Path, n: int = 16, skip: int = 0) -> Path:
    """SST-2 reviews as OpenAI chat fine-tuning rows: the reply is the label word."""
    lines = (SST2 / "train.tsv").read_text(encoding="utf-8").splitlines()[1 + skip : 1 + skip + n]
    rows = [
        {
            "messages": [
                {"role": "system", "content": "Answer with one word."},
                {"role": "user", "content": f"Sentiment of: {text}"},
                {"role": "assistant", "content": "positive" if label == "1" else "negative"},
            ]
        }
        for text, label in (line.split("\t") for line in lines)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def dpo_file(path: Path, n: int = 16) -> Path:
    """OpenAI's DPO rows: the reply 'positive' is preferred to 'negative'."""
    lines = (SST2 / "train.tsv").read_text(encoding="utf-8").splitlines()[1 : 1 + n]
    rows = [
        {
            "input": {"messages": [{"role": "user", "content": f"Sentiment of: {line.split(chr(9))[0]}"}]},
            "preferred_output": [{"role": "assistant", "content": "positive"}],
            "non_preferred_output": [{"role": "assistant", "content": "negative"}],
        }
        for line in lines
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def wait_for(client: openai.OpenAI, job_id: str, *statuses: str, timeout: float = 300) -> object:
    """Poll the job until its status is one of ``statuses``; fail naming the last events if it ends otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        if job.status in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
            events = [e.message for e in client.fine_tuning.jobs.list_events(job_id, limit=20)]
            raise AssertionError(f"job {job_id} is {job.status} (error {job.error}); events: {events}")
        time.sleep(0.2)


def wait_for_step(client: openai.OpenAI, job_id: str, step: int, timeout: float = 300) -> None:
    """Poll until a metrics event for ``step`` (or later) is listed."""
    deadline = time.monotonic() + timeout
    while True:
        events = client.fine_tuning.jobs.list_events(job_id, limit=5).data
        if any(e.type == "metrics" and (e.data or {}).get("step", 0) >= step for e in events):
            return
        job = client.fine_tuning.jobs.retrieve(job_id)
        assert job.status in ("queued", "running"), f"job {job_id} is {job.status}: {job.error}"
        assert time.monotonic() < deadline, f"no step {step} of {job_id} in time"
        time.sleep(0.1)
