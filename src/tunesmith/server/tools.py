"""Tools in /v1/chat/completions: the request's ``tools`` and tool messages checked as training data is (one
validator for both), the prompt rendered as in training, and ``tool_calls`` read back from the model's reply."""

from __future__ import annotations

from typing import Any

from tunesmith.data.fields import RowError
from tunesmith.data.messages import parse_messages
from tunesmith.data.records import Message
from tunesmith.data.tool_format import parse_tool_calls
from tunesmith.data.tools import parse_tools
from tunesmith.server.schemas import ChatRequest
from tunesmith.ship.inference import Generation


class ToolRequestError(ValueError):
    """A request whose tools or tool messages are invalid; ``param`` names the request field."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def tool_conversation(body: ChatRequest) -> tuple[list[Message], list[dict[str, Any]] | None]:
    """The request's messages and (unless ``tool_choice`` is "none") tools, checked."""
    try:
        tools = parse_tools(body.tools) if body.uses_tools() else None
    except RowError as exc:
        raise ToolRequestError(str(exc).removeprefix("field "), "tools") from None
    try:
        messages = parse_messages([m.as_dict() for m in body.messages], need_assistant=False, tools=tools)
    except RowError as exc:
        raise ToolRequestError(str(exc).removeprefix("field "), "messages") from None
    return messages, tools.definitions if tools else None


def reply_message(result: Generation) -> dict[str, Any]:
    """The assistant message of a reply to a request with tools: its text and the tool calls it made."""
    content, calls = parse_tool_calls(result.text)
    if not calls:
        return {"role": "assistant", "content": result.text}
    return {"role": "assistant", "content": content or None, "tool_calls": calls}
