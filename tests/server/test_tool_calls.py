"""A tiny model learns to call tools from a few tool-call chats; its greedy reply parses into the right call, and the
OpenAI-compatible server returns it as ``tool_calls``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from transformers import AutoTokenizer

from tunesmith.data.records import Message
from tunesmith.data.tool_format import parse_tool_calls
from tunesmith.pipeline.run import Run
from tunesmith.pipeline.trained import TrainedRun
from tunesmith.server.app import Limits, create_app
from tunesmith.ship.inference import Sampling, generate, load_pool, tool_chat_prompt

# A compact tool-aware chat template in the manner of Qwen2.5's (calls as <tool_call> JSON), so the tiny model's
# rows stay short; the fallback format for templates without tools is checked in tests/data/test_tool_chats.py.
TOOL_TEMPLATE = (
    "{% if tools %}<|im_start|>system\nTools: {% for t in tools %}{{ t.function.name }} {% endfor %}<|im_end|>\n"
    "{% endif %}{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.content %}{{ m.content }}{% endif %}"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>\n"
    "{{ {'name': c.function.name, 'arguments': c.function.arguments} | tojson }}\n</tool_call>{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = [{"type": "function", "function": {"name": name, "parameters": CITY}} for name in ("weather", "time")]
ASKS = {
    "Weather in Paris?": ("weather", "Paris"),
    "What time is it in Oslo?": ("time", "Oslo"),
    "Is it raining in Oslo?": ("weather", "Oslo"),
    "Time in Paris, please.": ("time", "Paris"),
}


def tool_row(question: str, name: str, city: str) -> dict:
    call = {"id": "call_1", "type": "function", "function": {"name": name, "arguments": json.dumps({"city": city})}}
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "tool_calls": [call]}]}


@pytest.fixture(scope="module")
def tool_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    folder = tmp_path_factory.mktemp("tools")
    model = folder / "model"
    shutil.copytree(tiny_model_dir, model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.chat_template = TOOL_TEMPLATE
    tokenizer.save_pretrained(model)
    data = folder / "tools.jsonl"
    data.write_text("".join(json.dumps({**tool_row(q, *a), "tools": TOOLS}) + "\n" for q, a in ASKS.items()))
    config = {
        "model": {"name": str(model)},
        "data": {"train": str(data), "dedup": {"exact": False, "near": False}},
        "method": {"name": "full"},
        "training": {
            "max_steps": 80,
            "batch_size": 4,
            "learning_rate": 5e-3,
            "max_seq_len": 96,
            "scheduler": "constant",
        },
        "eval": {"enabled": False},
        "output": {"dir": str(folder / "runs"), "name": "tools"},
    }
    path = folder / "tools.yaml"
    path.write_text(yaml.safe_dump(config))
    run = Run.from_file(path)
    run.open()
    run.prepare()
    run.train()  # no evaluation or report: the tests below are the evaluation
    return TrainedRun.from_dir(run.dir.root)


def test_a_tiny_model_learns_to_call_the_right_tool(tool_run: TrainedRun) -> None:
    served = next(iter(load_pool([tool_run]).models.values()))
    for question, (name, city) in ASKS.items():
        prompt = tool_chat_prompt(served, [Message("user", question)], TOOLS)
        reply = generate(served, prompt, Sampling(max_new_tokens=64))
        content, calls = parse_tool_calls(reply.text)
        assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
            (name, {"city": city})
        ], reply.text
        assert content == ""


def test_the_server_answers_with_tool_calls(tool_run: TrainedRun) -> None:
    client = TestClient(create_app(load_pool([tool_run]), Limits(max_tokens=64, max_body_bytes=100_000)))
    url = "/v1/chat/completions"
    # greedy: the server samples at temperature 1 by default, as OpenAI does
    ask = {
        "model": "tools",
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": TOOLS,
        "temperature": 0,
    }
    body = client.post(url, json=ask).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert (call["function"]["name"], json.loads(call["function"]["arguments"])) == ("weather", {"city": "Paris"})
    # The conversation goes on with the call's result; tool messages are checked against earlier calls.
    answered = {**ask, "messages": [*ask["messages"], choice["message"]]}
    answered["messages"].append({"role": "tool", "tool_call_id": call["id"], "content": '{"temp_c": 21}'})
    assert client.post(url, json=answered).status_code == 200
    bad_reply = {
        **answered,
        "messages": [*answered["messages"][:-1], {**answered["messages"][-1], "tool_call_id": "x"}],
    }
    error = client.post(url, json=bad_reply)
    assert error.status_code == 400 and error.json()["error"]["param"] == "messages"
    assert "'x' answers no earlier call" in error.json()["error"]["message"]
    bad_tool = {**ask, "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "nope"}}}]}
    error = client.post(url, json=bad_tool).json()["error"]
    assert error["param"] == "tools" and "not a valid JSON Schema" in error["message"]
    streamed = client.post(url, json={**ask, "stream": True})
    assert streamed.status_code == 400 and streamed.json()["error"]["param"] == "stream"
    plain = client.post(url, json={**ask, "tool_choice": "none"}).json()  # tools withheld: plain text
    assert "tool_calls" not in plain["choices"][0]["message"]
