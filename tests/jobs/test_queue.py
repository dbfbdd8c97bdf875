"""The queue's claim on both stores: workers claiming at once never take the same job, a job whose worker stopped
beating is taken again (and fenced from its old worker), and the store's migrations run once for many starters."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tunesmith.jobs import queue
from tunesmith.jobs.store import Store, connect
from tunesmith.jobs.tables import jobs


def _enqueue(store: Store, n: int) -> list[str]:
    ids = [f"ftjob-{i:04d}" for i in range(n)]
    rows = [
        {"id": i, "owner": "o", "model": "m", "seed": 0, "method": {}, "hyperparameters": {}, "config": {},
         "status": "queued", "attempt": 0, "lost": 0, "last_step": 0, "created_at": time.time()}
        for i in ids
    ]  # fmt: skip
    with store.engine.begin() as connection:
        connection.execute(jobs.insert(), rows)
    return ids


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    url = (
        request.getfixturevalue("postgres").database(f"queue_{tmp_path.name[-12:].lower()}")
        if request.param == "postgresql"
        else None
    )
    opened = connect(tmp_path, url)
    yield opened
    opened.close()


def test_concurrent_claims_take_each_job_once(store: Store) -> None:
    ids = _enqueue(store, 24)
    taken: list[str] = []
    start = threading.Barrier(8)

    def claimer(n: int) -> None:
        start.wait()
        while (job := queue.claim(store.engine, f"w{n}", stale_after=60)) is not None:
            taken.append(job["id"])

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(taken) == ids and max(Counter(taken).values()) == 1


def test_a_silent_workers_job_is_taken_again_and_fenced(store: Store) -> None:
    (job_id,) = _enqueue(store, 1)
    first = queue.claim(store.engine, "first", stale_after=60)
    assert first is not None and queue.claim(store.engine, "second", stale_after=60) is None
    time.sleep(0.3)
    second = queue.claim(store.engine, "second", stale_after=0.2)
    assert second is not None and second["id"] == job_id and second["attempt"] == 2 and second["lost"] == 1
    assert queue.heartbeat(store.engine, first) == (False, None)  # the old worker learns it lost the job
    assert not queue.finish(store.engine, first, "succeeded", "done")  # and cannot write its end
    assert queue.heartbeat(store.engine, second) == (True, None)


def test_many_starters_migrate_the_store_once(tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def start() -> None:
        try:
            connect(tmp_path).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
