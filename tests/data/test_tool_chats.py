"""Tool-using chats in OpenAI's format: checked (JSON Schema, declared tools, arguments, replies to earlier calls),
rendered with a tool-aware chat template or the documented fallback format, loss on the assistant's calls and
replies only, and the calls read back from a model's text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from tests.helpers.cli import run_cli_in_process
from tunesmith.core.config import DataConfig
from tunesmith.data.check import check_file
from tunesmith.data.prepare import load_records
from tunesmith.data.records import Chat, record_from_dict, record_to_dict
from tunesmith.data.render import IGNORE_INDEX, encode_chat, render_prompt
from tunesmith.data.tool_format import parse_tool_calls

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def call(name: str = "get_weather", arguments: object = '{"city": "Paris"}', call_id: str = "call_1") -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def tool_chat(*, calls: list | None = None, tools: list | None = None, reply_to: str = "call_1") -> dict:
    return {
        "messages": [
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": calls or [call()]},
            {"role": "tool", "tool_call_id": reply_to, "content": '{"temp_c": 21}'},
            {"role": "assistant", "content": "It is 21 °C in Paris."},
        ],
        "tools": [WEATHER] if tools is None else tools,
    }


BAD_SCHEMA = {**WEATHER, "function": {**WEATHER["function"], "parameters": {"type": "object", "required": "city"}}}
# line -> (kind, row); each is one clear error naming its field
ROWS = {
    1: (None, tool_chat()),
    2: ("undeclared_tool", tool_chat(calls=[call("get_wether")])),
    3: ("invalid_tool_arguments", tool_chat(calls=[call(arguments='{"city": ')])),
    4: ("invalid_tool_arguments", tool_chat(calls=[call(arguments={"city": 3})])),
    5: ("invalid_tool", tool_chat(tools=[BAD_SCHEMA])),
    6: ("invalid_tool_reply", tool_chat(reply_to="call_9")),
    7: ("undeclared_tool", tool_chat(tools=[])),
}


def write_rows(path: Path) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for _, row in ROWS.values()), encoding="utf-8")
    return path


def test_data_check_validates_tools_calls_and_replies(tmp_path: Path) -> None:
    result = check_file(str(write_rows(tmp_path / "tools.jsonl")))
    assert result.format == "messages" and result.valid_rows == 1
    assert {(p.kind, int(p.line)) for p in result.problems} == {(k, n) for n, (k, _) in ROWS.items() if k}
    message = {int(p.line): p.message for p in result.problems}
    assert message[2] == (
        "field 'messages[1].tool_calls[0].function.name': 'get_wether' is not a declared tool "
        "(declared tools: get_weather)"
    )
    assert "messages[1].tool_calls[0].function.arguments': not valid JSON" in message[3]
    assert "arguments.city': 3 is not of type 'string'" in message[4]
    assert "tools[0].function.parameters.required': not a valid JSON Schema" in message[5]
    assert "'call_9' answers no earlier call (calls so far: call_1)" in message[6]
    assert "the row declares no tools" in message[7]
    done = run_cli_in_process("data", "check", str(tmp_path / "tools.jsonl"))
    assert done.returncode == 1 and "error undeclared_tool (2):" in done.stdout


def test_tool_chats_load_and_survive_the_prepared_file(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "tools.jsonl")
    [chat] = load_records(str(path), DataConfig(train=str(path))).records
    assert isinstance(chat, Chat) and chat.tools == [WEATHER]
    assert [m.role for m in chat.messages] == ["user", "assistant", "tool", "assistant"]
    assert chat.messages[1].content == "" and chat.messages[2].tool_call_id == "call_1"
    assert json.loads(chat.messages[1].tool_calls[0]["function"]["arguments"]) == {"city": "Paris"}
    assert record_from_dict(json.loads(json.dumps(record_to_dict(chat)))) == chat
    plain = record_to_dict(Chat([]))
    assert "tools" not in plain  # chats without tools are written as before


def trained_text(encoded, tokenizer) -> list[str]:
    """The trained stretches of an encoded chat, decoded."""
    pieces, current = [], []
    for token, label in [*zip(encoded.input_ids, encoded.labels, strict=True), (None, IGNORE_INDEX)]:
        if label != IGNORE_INDEX:
            current.append(token)
        elif current:
            pieces.append(tokenizer.decode(current))
            current = []
    return pieces


def test_fallback_format_trains_on_calls_and_replies_only(tiny_model_dir: Path, tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)  # its ChatML template knows no tools
    path = write_rows(tmp_path / "tools.jsonl")
    [chat] = load_records(str(path), DataConfig(train=str(path))).records
    encoded = encode_chat(chat, tokenizer)
    text = tokenizer.decode(encoded.input_ids)
    assert text.startswith("<|im_start|>system\nYou may call these functions (JSON Schemas of their arguments):")
    assert '<tools>\n{"name": "get_weather", "description": "Current weather in a city"' in text
    assert '<|im_start|>user\n<tool_response>\n{"temp_c": 21}\n</tool_response><|im_end|>' in text
    assert trained_text(encoded, tokenizer) == [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>',
        "It is 21 °C in Paris.<|im_end|>",
    ]
    prompt = render_prompt(chat.messages[:1], tokenizer, chat.tools)
    assert prompt.endswith("<|im_start|>assistant\n") and "<tools>" in prompt


TOOL_TEMPLATE = (  # a small tool-aware template in the style of Qwen2.5's
    "{% if tools %}<|im_start|>system\n# Tools: {% for t in tools %}{{ t.function.name }}{% endfor %}<|im_end|>\n"
    "{% endif %}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}[call {{ c.function.name }} {{ c.function.arguments | tojson }}]"
    "{% endfor %}{% endif %}{% if m.tool_call_id %} (for {{ m.tool_call_id }}){% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_a_tool_aware_template_renders_tools_itself(tiny_model_dir: Path, tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = TOOL_TEMPLATE
    path = write_rows(tmp_path / "tools.jsonl")
    [chat] = load_records(str(path), DataConfig(train=str(path))).records
    encoded = encode_chat(chat, tokenizer)
    text = tokenizer.decode(encoded.input_ids)
    assert text.startswith("<|im_start|>system\n# Tools: get_weather<|im_end|>")
    assert '<|im_start|>tool\n{"temp_c": 21} (for call_1)<|im_end|>' in text
    assert trained_text(encoded, tokenizer) == [
        '[call get_weather {"city": "Paris"}]<|im_end|>',
        "It is 21 °C in Paris.<|im_end|>",
    ]


@pytest.mark.parametrize(
    ("text", "content", "calls"),
    [
        ('<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>', "", [("f", {"a": 1})]),
        (
            'Sure.\n<tool_call>{"name": "f", "arguments": {}}</tool_call>'
            '<tool_call>{"name": "g", "arguments": {"b": "x"}}',
            "Sure.",
            [("f", {}), ("g", {"b": "x"})],
        ),
        ('{"name": "f", "parameters": {"a": 2}}', "", [("f", {"a": 2})]),  # Llama 3.1's bare JSON
        ("<tool_call>not json</tool_call> plain", "<tool_call>not json</tool_call> plain", []),
        ("just text", "just text", []),
    ],
)
def test_tool_calls_are_read_back_from_text(text: str, content: str, calls: list) -> None:
    found_content, found = parse_tool_calls(text)
    assert found_content == content
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in found] == calls
    assert all(c["id"].startswith("call_") and c["type"] == "function" for c in found)


def test_data_preview_shows_the_tools_and_marks_the_calls(tiny_model_dir: Path, tmp_path: Path) -> None:
    from tests.helpers.configs import write_tiny_config

    path = tmp_path / "tools.jsonl"
    path.write_text(json.dumps(tool_chat()) + "\n", encoding="utf-8")
    data = {"train": str(path), "test": None, "prompt_template": None, "label_names": {}, "test_rows": None}
    config = write_tiny_config(
        tmp_path, tiny_model_dir, data=data, training={"max_seq_len": 512}, eval={"enabled": False}
    )
    done = run_cli_in_process("data", "preview", str(config), "--n", "1")
    assert done.returncode == 0, done.stderr
    assert "<tools>" in done.stdout and "<tool_response>" in done.stdout
    assert (
        '⟦<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>⟧' in done.stdout
    )
