"""`tunesmith serve`: the official openai client against a real server process on loopback, two adapters on one base."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.helpers.cli import serving
from tests.helpers.models import EOS_ID
from tests.helpers.paths import SST2
from tests.helpers.training import train_tiny_run

KEY = "test-key-123"
PROMPT = "Sentiment of: a gorgeous , witty , seductive movie ."
SST2_DEV = SST2 / "dev.tsv"


@pytest.fixture(scope="module")
def second_run_dir(eos_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another LoRA run on the same base (barely trained, different seed): a different adapter."""
    return train_tiny_run(tmp_path_factory.mktemp("second"), eos_model_dir, "second", steps=2, seed=7, evaluate=False)


@pytest.fixture(scope="module")
def server(tuned_run_dir: Path, second_run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    args = [
        str(tuned_run_dir),
        str(second_run_dir),
        "--api-key",
        KEY,
        "--max-tokens",
        "64",
        "--max-body-bytes",
        "20000",
    ]
    with serving(args, tmp_path_factory.mktemp("server") / "server.log") as url:
        yield url


@pytest.fixture(scope="module")
def client(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def references(tuned_run_dir: Path, second_run_dir: Path, eos_model_dir: Path) -> dict[str, tuple[str, bool]]:
    """Greedy replies to PROMPT from plain peft for each adapter: (text, stopped at EOS)."""
    tokenizer = AutoTokenizer.from_pretrained(tuned_run_dir / "model")
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    replies = {}
    for run_dir in (tuned_run_dir, second_run_dir):
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(eos_model_dir), str(run_dir / "model"))
        with torch.no_grad():
            out = model.eval().generate(**ids, max_new_tokens=20, do_sample=False, eos_token_id=[EOS_ID, 1])
        new = out[0, ids["input_ids"].shape[1] :]
        replies[run_dir.name] = (tokenizer.decode(new, skip_special_tokens=True), int(new[-1]) in (EOS_ID, 1))
    return replies


def _chat(client: openai.OpenAI, model: str, **options) -> object:
    options = {"temperature": 0, "max_tokens": 20, **options}
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": PROMPT}], **options)


def test_lists_the_served_runs(client: openai.OpenAI, server: str) -> None:
    assert sorted(m.id for m in client.models.list()) == ["second", "tuned"]
    assert httpx.get(f"{server}/health").json()["status"] == "ok"  # no key needed for health


def test_chat_completion_uses_the_chosen_adapter_and_stops_at_eos(
    client: openai.OpenAI, references: dict[str, tuple[str, bool]]
) -> None:
    reply = _chat(client, "tuned")
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == references["tuned"][0]
    assert choice.message.content in ("positive", "negative")
    assert choice.finish_reason == "stop" and reply.usage.completion_tokens < 20
    other = _chat(client, "second").choices[0]
    assert other.message.content == references["second"][0]
    assert other.finish_reason == ("stop" if references["second"][1] else "length")
    assert references["second"][0] != references["tuned"][0]  # the two adapters really differ


def test_streamed_chat_completion(client: openai.OpenAI) -> None:
    chunks = list(_chat(client, "tuned", stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == _chat(client, "tuned").choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_stop_strings_end_the_reply_before_them(client: openai.OpenAI) -> None:
    full = _chat(client, "tuned").choices[0].message.content  # "positive" or "negative"
    stop = full[3:5]
    cut = _chat(client, "tuned", stop=[stop, "zzz"]).choices[0]
    assert cut.message.content == full[:3] and cut.finish_reason == "stop"
    chunks = list(_chat(client, "tuned", stop=stop, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == full[:3]
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_streamed_text_completion(client: openai.OpenAI) -> None:
    options = {"model": "second", "prompt": "the movie is", "max_tokens": 8, "temperature": 0}
    chunks = list(client.completions.create(stream=True, **options))
    whole = client.completions.create(**options)
    assert len(chunks) >= 2
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert whole.usage.completion_tokens <= 8


def test_wrong_key_is_401(server: str) -> None:
    wrong = openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        wrong.models.list()
    assert info.value.status_code == 401
    assert info.value.body["code"] == "invalid_api_key"
    response = httpx.post(f"{server}/v1/chat/completions", json={"model": "tuned", "messages": []})
    assert response.status_code == 401 and "error" in response.json()


def test_bad_requests_get_openai_error_objects(client: openai.OpenAI, server: str) -> None:
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    malformed = httpx.post(
        f"{server}/v1/chat/completions", content=b'{"model": "tuned", "messages": [', headers=headers
    )
    assert malformed.status_code == 400
    error = malformed.json()["error"]
    assert error["type"] == "invalid_request_error" and "not valid JSON" in error["message"]

    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tuned", messages=[{"role": "robot", "content": "hi"}])
    assert info.value.body["param"] == "messages.0.role"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tuned", messages=[])
    assert info.value.body["param"] == "messages"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tuned", messages=[{"role": "user", "content": "hi"}], max_tokens=999)
    assert "at most 64" in info.value.body["message"]
    with pytest.raises(openai.NotFoundError) as info:
        _chat(client, "no-such-run")
    assert info.value.body["code"] == "model_not_found"

    huge = json.dumps({"model": "tuned", "messages": [{"role": "user", "content": "x" * 30_000}]})
    too_big = httpx.post(f"{server}/v1/chat/completions", content=huge, headers=headers)
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "request_too_large"
    unknown_route = httpx.get(f"{server}/v1/nothing", headers=headers)
    assert unknown_route.status_code == 404 and "error" in unknown_route.json()


def test_load_200_requests_from_16_clients(client: openai.OpenAI, server: str) -> None:
    def one(i: int) -> str:
        model = ("tuned", "second")[i % 2]
        if i % 4 == 3:
            reply = client.completions.create(model=model, prompt=f"review {i}:", max_tokens=6, temperature=0.8)
            assert reply.object == "text_completion" and reply.choices[0].finish_reason in ("stop", "length")
            return reply.choices[0].text
        if i % 4 == 2:
            chunks = list(_chat(client, model, stream=True, max_tokens=8))
            assert chunks[-1].choices[0].finish_reason in ("stop", "length")
            return "".join(c.choices[0].delta.content or "" for c in chunks)
        reply = _chat(client, model, max_tokens=8)
        assert reply.object == "chat.completion" and reply.model == model
        assert reply.choices[0].finish_reason in ("stop", "length") and reply.usage.total_tokens > 0
        return reply.choices[0].message.content

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=16) as pool:
        replies = list(pool.map(one, range(200)))
    seconds = time.perf_counter() - started
    assert len(replies) == 200 and all(isinstance(r, str) for r in replies)
    tuned_greedy = {replies[i] for i in range(200) if i % 4 in (0, 2) and i % 2 == 0}
    assert len(tuned_greedy) == 1  # greedy replies of one model agree, whatever the interleaving
    assert httpx.get(f"{server}/health").json()["status"] == "ok"
    print(f"200 requests from 16 clients in {seconds:.1f} s")


def test_16_concurrent_clients_get_the_serial_greedy_answers(
    client: openai.OpenAI, tuned_run_dir: Path, second_run_dir: Path
) -> None:
    """The server decodes concurrent requests together (default --max-batch 16); every greedy answer, streamed or
    not, is still the one that generate() gives for the request alone (the serial server's answer)."""
    from tunesmith.pipeline.trained import TrainedRun
    from tunesmith.ship.inference import Sampling, chat_prompt, generate, load_pool

    sentences = [line.split("\t")[0] for line in SST2_DEV.read_text().splitlines()[1:9]]
    asks = [(model, f"Sentiment of: {s}") for s in sentences for model in ("tuned", "second")]  # prompt lengths vary
    limits = [1 if i % 4 == 0 else 12 for i in range(len(asks))]  # replies of different lengths
    pool = load_pool([TrainedRun.from_dir(tuned_run_dir), TrainedRun.from_dir(second_run_dir)])
    serial = []
    for (model, text), limit in zip(asks, limits, strict=True):
        served = pool.get(model)
        assert served is not None
        reply = generate(served, chat_prompt(served, [{"role": "user", "content": text}]), Sampling(limit))
        serial.append((reply.text, reply.finish_reason))

    def one(i: int) -> tuple[str, str]:
        model, text = asks[i]
        messages = [{"role": "user", "content": text}]
        options = {"model": model, "messages": messages, "temperature": 0, "max_tokens": limits[i]}
        if i % 2:
            chunks = list(client.chat.completions.create(stream=True, **options))
            return "".join(c.choices[0].delta.content or "" for c in chunks), chunks[-1].choices[0].finish_reason
        choice = client.chat.completions.create(**options).choices[0]
        return choice.message.content, choice.finish_reason

    with ThreadPoolExecutor(max_workers=16) as threads:
        batched = list(threads.map(one, range(len(asks))))
    assert batched == serial
    assert {reason for _, reason in serial} == {"stop", "length"}  # short and long replies shared the batch
