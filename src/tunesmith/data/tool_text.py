"""The fallback tool-call format as text (Hermes', also Qwen2.5's): what a model without a tool-aware chat template
is trained to write, and what ``tool_format.parse_tool_calls`` reads back. Plain values only, so records can use it.
"""

from __future__ import annotations

import json
from typing import Any

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"


def arguments_of(call: dict[str, Any]) -> Any:
    """A call's arguments as an object (OpenAI sends them as a JSON string; chat templates take an object)."""
    arguments = call["function"]["arguments"]
    return json.loads(arguments) if isinstance(arguments, str) else arguments


def call_text(call: dict[str, Any]) -> str:
    body = json.dumps({"name": call["function"]["name"], "arguments": arguments_of(call)}, ensure_ascii=False)
    return f"{CALL_OPEN}\n{body}\n{CALL_CLOSE}"


def reply_text(content: str, calls: list[dict[str, Any]] | None) -> str:
    """An assistant message as text: its content, then each of its calls."""
    parts = [content] if content else []
    return "\n".join(parts + [call_text(c) for c in calls or []])
