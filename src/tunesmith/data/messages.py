"""Chat messages in a row: OpenAI ``{role, content}`` lists (checked as OpenAI's validator checks them, tool calls
and tool replies included), a prompt or reply given as text or as messages, and Anthropic ``Human:``/``Assistant:``
transcripts.
"""

from __future__ import annotations

from typing import Any

from tunesmith.data.fields import RowError
from tunesmith.data.records import ROLES, Message
from tunesmith.data.tools import Tools, parse_calls

MESSAGE_KEYS = ("role", "content", "name", "weight", "tool_calls", "tool_call_id", "function_call")
_MESSAGE_KEYS = frozenset(MESSAGE_KEYS)


def parse_messages(
    raw: Any, key: str = "messages", need_assistant: bool = True, tools: Tools | None = None
) -> list[Message]:
    """OpenAI chat messages, checked the way OpenAI's fine-tuning data validator checks them.

    Tool use (``tools`` declared by the row): an assistant message may carry ``tool_calls`` (its content may then be
    null or absent), and a ``tool`` message answers an earlier call by its ``tool_call_id``.
    """
    if raw is None:
        raise RowError(f"missing field '{key}'", "missing_field")
    if not isinstance(raw, list) or not raw:
        raise RowError(f"field '{key}': expected a non-empty list of {{role, content}} objects", "wrong_type")
    messages = []
    replies = 0
    calls: dict[str, str] = {}  # id -> tool name, of the calls made so far
    for index, item in enumerate(raw):
        where = f"{key}[{index}]"
        if not isinstance(item, dict):
            raise RowError(f"field '{where}': expected an object with 'role' and 'content'", "wrong_type")
        calling = item.get("role") == "assistant" and item.get("tool_calls") is not None
        if "role" not in item or ("content" not in item and not calling):
            missing = "role" if "role" not in item else "content"
            raise RowError(f"field '{where}': missing key '{missing}'", "message_missing_key")
        if len(item) > 2 and not _MESSAGE_KEYS.issuperset(item):
            unknown = next(k for k in item if k not in _MESSAGE_KEYS)
            raise RowError(f"field '{where}': unrecognised key '{unknown}'", "unrecognized_key")
        role, content = item["role"], item.get("content")
        if role not in ROLES:
            raise RowError(
                f"field '{where}'.role: expected one of {', '.join(ROLES)}, got {role!r}", "unrecognized_role"
            )
        if content is None and calling:
            content = ""
        if not isinstance(content, str):
            raise RowError(f"field '{where}'.content: expected text, got {type(content).__name__}", "wrong_type")
        if (not content or content.isspace()) and not calling and role != "tool":
            raise RowError(f"field '{where}'.content: expected non-empty text", "empty_content")
        weight = item.get("weight")
        if weight is not None and weight not in (0, 1):
            raise RowError(f"field '{where}'.weight: expected 0 or 1, got {weight!r}", "wrong_type")
        message = Message(role, content, weight)
        if calling:
            message.tool_calls = parse_calls(item["tool_calls"], where, tools)
            calls |= {call["id"]: call["function"]["name"] for call in message.tool_calls}
        elif item.get("tool_calls") is not None:
            raise RowError(f"field '{where}'.tool_calls: only assistant messages call tools", "invalid_tool_call")
        if role == "tool":
            message.tool_call_id = _answered_call(item.get("tool_call_id"), where, calls)
        messages.append(message)
        replies += role == "assistant"
    if need_assistant and not replies:
        raise RowError(f"field '{key}': no assistant message to learn from", "no_assistant_message")
    return messages


def _answered_call(call_id: Any, where: str, calls: dict[str, str]) -> str:
    if not isinstance(call_id, str) or not call_id:
        raise RowError(f"field '{where}'.tool_call_id: a tool message names the call it answers", "invalid_tool_reply")
    if call_id not in calls:
        made = ", ".join(calls) or "none"
        raise RowError(
            f"field '{where}'.tool_call_id: {call_id!r} answers no earlier call (calls so far: {made})",
            "invalid_tool_reply",
        )
    return call_id


def prompt_messages(value: Any, key: str) -> list[Message]:
    """A prompt given as text (one user message) or as a list of messages."""
    if isinstance(value, str):
        if not value.strip():
            raise RowError(f"field '{key}': empty text", "empty_text")
        return [Message("user", value)]
    if isinstance(value, dict) and "messages" in value:  # OpenAI DPO: {"input": {"messages": [...]}}
        value = value["messages"]
    return parse_messages(value, key, need_assistant=False)


def reply(value: Any, key: str) -> str:
    """A reply given as text or as a list of messages (its last assistant message)."""
    if isinstance(value, list):
        replies = [m for m in parse_messages(value, key) if m.role == "assistant"]
        return replies[-1].content
    if not isinstance(value, str):
        raise RowError(f"field '{key}': expected a string or a list of messages", "wrong_type")
    if not value.strip():
        raise RowError(f"field '{key}': empty text", "empty_text")
    return value


def transcript_messages(text: str) -> list[Message]:
    """``\\n\\nHuman: ...\\n\\nAssistant: ...`` as messages."""
    messages: list[Message] = []
    for chunk in text.split("\n\n"):
        for prefix, role in (("Human:", "user"), ("Assistant:", "assistant")):
            if chunk.startswith(prefix):
                messages.append(Message(role, chunk[len(prefix) :].strip()))
                break
        else:
            if messages:  # a paragraph break inside a turn
                messages[-1].content += "\n\n" + chunk
    if not messages:
        raise RowError("the transcript has no 'Human:' turn", "missing_field")
    return messages
