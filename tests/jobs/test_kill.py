"""Reliability with real processes and signals: a worker killed mid-training (SIGKILL) is replaced and its job
resumes from the last checkpoint, ending bitwise equal to an uninterrupted job; Ctrl-C on a worker pauses its job
with a checkpoint and puts it back in the queue; a server killed mid-upload lists no partial file, and after a
restart its files, jobs, events and models are all there."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers.jobs import chat_file, jobs_server, make_keys, start_worker, stop, wait_for, wait_for_step

STEPS_100 = {"n_epochs": 25, "batch_size": 4, "learning_rate_multiplier": 10}  # 16 rows: 100 steps, saved every 20


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kill")


@pytest.fixture(scope="module")
def keys(home: Path) -> dict[str, str]:
    return make_keys(home, None, "alice")


def test_a_killed_worker_is_replaced_and_the_job_resumes_bitwise(
    home: Path, keys: dict[str, str], tiny_model_dir: Path
) -> None:
    with jobs_server(home, workers=0, keys=keys) as service:
        alice = service.client()
        with chat_file(home / "train.jsonl").open("rb") as handle:
            chats = alice.files.create(file=handle, purpose="fine-tune").id
        create = {"model": str(tiny_model_dir), "training_file": chats, "seed": 11, "hyperparameters": STEPS_100}
        victim, reference = (alice.fine_tuning.jobs.create(**create, suffix=s) for s in ("victim", "reference"))
        first = start_worker(home, None, "first", "--stale-after", "2")
        deadline = time.monotonic() + 120
        while not alice.fine_tuning.jobs.checkpoints.list(victim.id).data:
            assert time.monotonic() < deadline and first.poll() is None, "no checkpoint in time"
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait()
        metrics = home / "runs" / victim.id / "metrics.jsonl"
        logged = metrics.read_text().count("\n")
        time.sleep(1)
        assert metrics.read_text().count("\n") == logged < 100  # its training process died with it
        assert alice.fine_tuning.jobs.retrieve(victim.id).status == "running"  # until its heartbeat is stale
        second = start_worker(home, None, "second", "--stale-after", "2")
        try:
            for job in (victim, reference):
                wait_for(alice, job.id, "succeeded")
        finally:
            stop(second)
        events = list(alice.fine_tuning.jobs.list_events(victim.id, limit=300))
        assert sorted(e.data["step"] for e in events if e.type == "metrics") == list(range(1, 101))
        assert any("on worker second (its previous worker stopped)" in e.message for e in events)
        log = (home / "runs" / f"{victim.id}.log").read_text()
        assert "--resume" in log and "continuing from step" in log
        ours, theirs = (
            load_file(home / "runs" / j.id / "model" / "adapter_model.safetensors") for j in (victim, reference)
        )
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_ctrl_c_on_a_worker_pauses_its_job_with_a_checkpoint_and_requeues_it(
    home: Path, keys: dict[str, str], tiny_model_dir: Path
) -> None:
    with jobs_server(home, workers=0, keys=keys) as service:
        alice = service.client()
        chats = alice.files.list(purpose="fine-tune").data[0].id
        job = alice.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file=chats, hyperparameters=STEPS_100)
        worker = start_worker(home, None, "third")
        wait_for_step(alice, job.id, 3)
        worker.send_signal(signal.SIGINT)
        assert worker.wait(timeout=60) == 0
        requeued = alice.fine_tuning.jobs.retrieve(job.id)
        assert requeued.status == "queued"
        step = max(c.step_number for c in alice.fine_tuning.jobs.checkpoints.list(job.id))
        assert 3 <= step < 100 and (home / "runs" / job.id / "checkpoints" / f"step-{step}").is_dir()


def test_a_server_killed_mid_upload_lists_no_partial_file_and_keeps_everything(
    home: Path, keys: dict[str, str]
) -> None:
    with jobs_server(home, workers=0, keys=keys) as service:
        alice = service.client()
        before = {f.id for f in alice.files.list()}
        jobs_before = [(j.id, j.status) for j in alice.fine_tuning.jobs.list()]
        models = [m.id for m in alice.models.list() if m.id.startswith("ft:")]
        assert len(jobs_before) == 3 and len(models) == 2
        with socket.create_connection(("127.0.0.1", int(service.url.rsplit(":", 1)[1]))) as sock:
            boundary = "xyz"
            head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n\r\n'
            request = (
                f"POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {keys['alice']}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: 150000\r\n\r\n{head}"
            )
            sock.sendall(request.encode() + b'{"messages": []}\n' * 2000)  # 34 kB of 150 kB, then nothing
            time.sleep(0.5)  # the server is writing the part to its temp file
            assert list((home / "files").glob(".upload-*.tmp"))
            service.process.send_signal(signal.SIGKILL)
            service.process.wait()
    with jobs_server(home, workers=0, keys=keys) as service:
        alice = service.client()
        assert {f.id for f in alice.files.list()} == before  # no partial file
        assert [(j.id, j.status) for j in alice.fine_tuning.jobs.list()] == jobs_before
        assert len(alice.fine_tuning.jobs.list_events(jobs_before[-1][0], limit=300).data) > 100
        assert [m.id for m in alice.models.list() if m.id.startswith("ft:")] == models
        reply = alice.chat.completions.create(
            model=models[0], messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
        assert reply.model == models[0]
