"""Tool-using chats as chat-template input, and tool calls read back from a model's output.

A tokenizer whose chat template knows tools (it mentions ``tool_calls``: Qwen2.5, Llama 3.1, Hermes, Mistral...) gets
the conversation as transformers documents it: ``tools=`` the function definitions, assistant messages with
``tool_calls`` (arguments as objects) and ``tool`` messages with their ``tool_call_id``.

A template without tools (SmolLM2's, the tests' tiny one, the ChatML fallback for models with none) would drop
them silently, so the conversation is rewritten into plain messages in one documented format, Hermes' (also
Qwen2.5's own), which ``parse_tool_calls`` reads back:

- the tools, one JSON object per line inside ``<tools>...</tools>``, with an instruction, join the system message
  (a system message is added when there is none);
- an assistant's calls follow its text, each as ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``;
- tool replies become a user message of ``<tool_response>\\n...\\n</tool_response>`` blocks (consecutive replies
  share one message, as templates that insist on alternating roles require).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from tunesmith.data.records import Message
from tunesmith.data.tool_text import CALL_CLOSE, CALL_OPEN, arguments_of, reply_text

TOOLS_INTRO = "You may call these functions (JSON Schemas of their arguments):"
TOOLS_HOWTO = 'To call one, reply with <tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call> per call.'


def supports_tools(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template renders tool calls itself."""
    template = getattr(tokenizer, "chat_template", None) or ""
    texts = template.values() if isinstance(template, dict) else [template]
    return any("tool_calls" in text for text in texts)


def uses_tools(messages: list[Message], tools: list[dict[str, Any]] | None) -> bool:
    return bool(tools) or any(m.tool_calls or m.role == "tool" for m in messages)


def template_messages(
    messages: list[Message], tools: list[dict[str, Any]] | None, tokenizer: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None, list[bool]]:
    """The messages as ``apply_chat_template`` takes them, its ``tools`` argument, and per message whether it is an
    assistant turn that carries loss (weight not 0)."""
    if not uses_tools(messages, tools):
        return [{"role": m.role, "content": m.content} for m in messages], None, [_trained(m) for m in messages]
    if supports_tools(tokenizer):
        return [_native(m) for m in messages], tools, [_trained(m) for m in messages]
    out: list[dict[str, Any]] = []
    trained: list[bool] = []
    for message in messages:
        if message.role == "tool":
            block = f"<tool_response>\n{message.content}\n</tool_response>"
            if out and out[-1].get("tool_replies"):
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block, "tool_replies": True})
                trained.append(False)
            continue
        content = reply_text(message.content, message.tool_calls) if message.role == "assistant" else message.content
        out.append({"role": message.role, "content": content})
        trained.append(_trained(message))
    for item in out:
        item.pop("tool_replies", None)
    if tools:
        block = tools_text(tools)
        if out and out[0]["role"] == "system":
            out[0]["content"] = f"{out[0]['content']}\n\n{block}"
        else:
            out.insert(0, {"role": "system", "content": block})
            trained.insert(0, False)
    return out, None, trained


def _trained(message: Message) -> bool:
    return message.role == "assistant" and message.weight != 0


def _native(message: Message) -> dict[str, Any]:
    item: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        item["tool_calls"] = [
            {"id": c["id"], "type": "function", "function": {**c["function"], "arguments": arguments_of(c)}}
            for c in message.tool_calls
        ]
    if message.tool_call_id:
        item["tool_call_id"] = message.tool_call_id
    return item


def tools_text(tools: list[dict[str, Any]]) -> str:
    lines = "\n".join(json.dumps(tool["function"], ensure_ascii=False) for tool in tools)
    return f"{TOOLS_INTRO}\n<tools>\n{lines}\n</tools>\n{TOOLS_HOWTO}"


def parse_tool_calls(text: str) -> tuple[str, list[dict[str, Any]]]:
    """The text outside tool calls, and the calls (OpenAI's shape, arguments as a JSON string, fresh ids).

    Reads ``<tool_call>{json}</tool_call>`` blocks (the fallback format; Hermes', Qwen2.5's; a last block may lack
    its closing tag when generation stopped there) and a reply that is one bare JSON call, ``{"name": ...,
    "arguments"|"parameters": {...}}`` (Llama 3.1's). A block that is not such JSON stays in the text.
    """
    calls: list[dict[str, Any]] = []
    kept: list[str] = []
    rest = text
    while (start := rest.find(CALL_OPEN)) >= 0:
        end = rest.find(CALL_CLOSE, start)
        body = rest[start + len(CALL_OPEN) : end if end >= 0 else len(rest)]
        call = _call(body)
        stop = end + len(CALL_CLOSE) if end >= 0 else len(rest)
        kept.append(rest[:start] if call else rest[:stop])
        if call:
            calls.append(call)
        rest = rest[stop:]
    kept.append(rest)
    content = "".join(kept).strip()
    if not calls and (bare := _call(content.removeprefix("<|python_tag|>"))):
        return "", [bare]
    return content, calls


def _call(body: str) -> dict[str, Any] | None:
    try:
        value = json.loads(body.strip())
    except json.JSONDecodeError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    if not isinstance(arguments, dict):
        return None
    return {
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": value["name"], "arguments": json.dumps(arguments, ensure_ascii=False)},
    }
