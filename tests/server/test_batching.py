"""The server's continuous batching: one request at a time with max_batch 1, requests decoded together above it,
the bounded queue (503 when full) and cancellation. Greedy equality under 16 concurrent clients is in
test_serve.py (against the real server process)."""

from __future__ import annotations

import contextlib
import itertools
import threading
from concurrent.futures import CancelledError
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunesmith.pipeline.trained import TrainedRun
from tunesmith.server.app import Limits, create_app
from tunesmith.ship.batching import Batcher, Overloaded
from tunesmith.ship.inference import Sampling, Served, chat_prompt, generate, load_pool


@pytest.fixture(scope="module")
def endless(tiny_model_dir: Path) -> Served:
    """The random tiny Llama with no EOS: every reply runs to max_new_tokens, so jobs have a known length."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    return Served("endless", model, None, AutoTokenizer.from_pretrained(tiny_model_dir), [], None, 512)


def _prompts(served: Served, n: int) -> list[list[int]]:
    words = ["the", "movie", "was", "a", "long", "and", "quiet", "story", "about", "two", "old", "friends"]
    return [chat_prompt(served, [{"role": "user", "content": " ".join(words[: 3 + i])}]) for i in range(n)]


def test_max_batch_1_runs_one_request_at_a_time(endless: Served) -> None:
    batcher = Batcher(max_batch=1, max_queue=8, text_lock=threading.Lock())
    try:
        jobs = [batcher.generate(endless, p, Sampling(16)) for p in _prompts(endless, 3)]
        results = [job.future.result(timeout=120) for job in jobs]
    finally:
        batcher.close()
    spans = sorted((job.started, job.ended) for job in jobs)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))  # no two ran at once
    alone = [generate(endless, p, Sampling(16)) for p in _prompts(endless, 3)]
    assert [(r.text, r.completion_tokens) for r in results] == [(r.text, r.completion_tokens) for r in alone]


def test_concurrent_requests_share_the_batch_and_keep_their_greedy_answers(endless: Served) -> None:
    batcher = Batcher(max_batch=4, max_queue=8, text_lock=threading.Lock())
    try:
        prompts = _prompts(endless, 6)  # prompts of different lengths: left padding
        lengths = [16, 4, 16, 9, 12, 16]  # finishing at different steps: sequences leave and join mid-batch
        jobs = [batcher.generate(endless, p, Sampling(n)) for p, n in zip(prompts, lengths, strict=True)]
        results = [job.future.result(timeout=120) for job in jobs]
    finally:
        batcher.close()
    assert jobs[0].ended is not None and jobs[1].started is not None and jobs[1].started < jobs[0].ended
    assert max(job.started for job in jobs) < max(job.ended for job in jobs[:4])  # a late job joined a running batch
    alone = [generate(endless, p, Sampling(n)) for p, n in zip(prompts, lengths, strict=True)]
    assert [(r.text, r.completion_tokens, r.finish_reason) for r in results] == [
        (r.text, r.completion_tokens, r.finish_reason) for r in alone
    ]


def test_seeded_sampling_is_per_request(endless: Served) -> None:
    batcher = Batcher(max_batch=4, max_queue=8, text_lock=threading.Lock())
    prompt = _prompts(endless, 1)[0]
    try:
        sampled = [batcher.generate(endless, prompt, Sampling(12, temperature=1.0, seed=s)) for s in (5, 6, 5)]
        texts = [job.future.result(timeout=120).text for job in sampled]
    finally:
        batcher.close()
    assert texts[0] == texts[2] and texts[0] != texts[1]


def test_a_cancelled_request_leaves_the_batch(endless: Served) -> None:
    batcher = Batcher(max_batch=4, max_queue=8, text_lock=threading.Lock())
    try:
        kept = batcher.generate(endless, _prompts(endless, 1)[0], Sampling(24))
        dropped = batcher.generate(endless, _prompts(endless, 2)[1], Sampling(400))
        dropped.cancel()  # before it joined the batch: dropped from the queue; after: ends at the next step
        with contextlib.suppress(CancelledError):
            assert dropped.future.result(timeout=120).completion_tokens < 400
        assert kept.future.result(timeout=120).completion_tokens == 24
    finally:
        batcher.close()


def test_a_full_queue_is_refused_with_503(tuned_run_dir: Path) -> None:
    pool = load_pool([TrainedRun.from_dir(tuned_run_dir)])
    app = create_app(pool, Limits(max_tokens=16, max_body_bytes=100_000, max_batch=1, max_queue=1))
    served = pool.models["tuned"]
    release = threading.Event()
    ask = {"model": "tuned", "messages": [{"role": "user", "content": "Sentiment of: fine ."}], "max_tokens": 4}
    with TestClient(app) as client:
        busy = app.state.batcher.call(served, lambda: release.wait(60))  # holds the model, as a long request would
        waiting = app.state.batcher.generate(served, chat_prompt(served, [{"role": "user", "content": "hi"}]),
                                             Sampling(2))  # fmt: skip
        with pytest.raises(Overloaded):
            app.state.batcher.generate(served, [1, 2, 3], Sampling(2))
        refused = client.post("/v1/chat/completions", json=ask)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        error = refused.json()["error"]
        assert error["code"] == "server_overloaded" and "retry later" in error["message"]
        release.set()
        busy.future.result(timeout=60)
        waiting.future.result(timeout=60)
        answered = client.post("/v1/chat/completions", json=ask)
        assert answered.status_code == 200 and answered.json()["choices"][0]["message"]["content"]
