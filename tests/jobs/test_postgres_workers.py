"""The jobs service on a real PostgreSQL server with two `tunesmith worker` processes beside the server (none in
it): a supervised job end to end through the openai client, and two queued jobs taken at once by the two workers,
each by one of them."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.helpers.jobs import Service, chat_file, jobs_server, start_worker, stop, wait_for

STEPS_60 = {"n_epochs": 15, "batch_size": 4, "learning_rate_multiplier": 10}  # 16 rows: 60 steps


@pytest.fixture(scope="module")
def service(postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, str]]:
    url = postgres.database("jobs_service")
    home = tmp_path_factory.mktemp("pg-jobs")
    with jobs_server(home, store=url, workers=0) as running:
        workers = [start_worker(home, url, name) for name in ("one", "two")]
        try:
            yield running, url
        finally:
            for worker in workers:
                stop(worker)


@pytest.fixture(scope="module")
def chats(service: tuple[Service, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    path = chat_file(tmp_path_factory.mktemp("data") / "train.jsonl")
    with path.open("rb") as handle:
        return service[0].client().files.create(file=handle, purpose="fine-tune").id


def test_a_job_on_postgresql_end_to_end(service: tuple[Service, str], chats: str, tiny_model_dir: Path) -> None:
    alice = service[0].client()
    job = alice.fine_tuning.jobs.create(
        model=str(tiny_model_dir), training_file=chats, hyperparameters={"n_epochs": 1, "batch_size": 4}
    )
    done = wait_for(alice, job.id, "succeeded")
    assert [c.step_number for c in alice.fine_tuning.jobs.checkpoints.list(job.id)] == [4, 3, 2, 1]
    reply = alice.chat.completions.create(
        model=done.fine_tuned_model, messages=[{"role": "user", "content": "Sentiment of: fine"}], max_tokens=3
    )
    assert reply.choices[0].finish_reason in ("stop", "length")
    with pytest.raises(openai.NotFoundError):
        service[0].client("bob").fine_tuning.jobs.retrieve(job.id)


def test_two_workers_take_two_queued_jobs_at_once(
    service: tuple[Service, str], chats: str, tiny_model_dir: Path
) -> None:
    alice = service[0].client()
    created = [
        alice.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file=chats, hyperparameters=STEPS_60)
        for _ in range(2)
    ]
    deadline = time.monotonic() + 120
    while not all(alice.fine_tuning.jobs.retrieve(j.id).status == "running" for j in created):  # both at once
        assert time.monotonic() < deadline, [alice.fine_tuning.jobs.retrieve(j.id).status for j in created]
        time.sleep(0.1)
    for job in created:
        wait_for(alice, job.id, "succeeded")
    starts = [
        [e.message for e in alice.fine_tuning.jobs.list_events(j.id, limit=200) if "job started" in e.message]
        for j in created
    ]
    assert all(len(s) == 1 for s in starts)  # each taken once
    workers = {re.search(r"on worker (\w+)", s[0]).group(1) for s in starts}
    assert workers == {"one", "two"}
