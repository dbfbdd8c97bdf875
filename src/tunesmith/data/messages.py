"""Chat messages in a row: OpenAI ``{role, content}`` lists (checked as OpenAI's validator checks them), a prompt or
reply given as text or as messages, and Anthropic ``Human:``/``Assistant:`` transcripts.
"""

from __future__ import annotations

from typing import Any

from tunesmith.data.fields import RowError
from tunesmith.data.records import ROLES, Message

MESSAGE_KEYS = ("role", "content", "name", "weight", "tool_calls", "tool_call_id", "function_call")
_MESSAGE_KEYS = frozenset(MESSAGE_KEYS)


def parse_messages(raw: Any, key: str = "messages", need_assistant: bool = True) -> list[Message]:
    """OpenAI chat messages, checked the way OpenAI's fine-tuning data validator checks them."""
    if raw is None:
        raise RowError(f"missing field '{key}'", "missing_field")
    if not isinstance(raw, list) or not raw:
        raise RowError(f"field '{key}': expected a non-empty list of {{role, content}} objects", "wrong_type")
    messages = []
    replies = 0
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise RowError(f"field '{key}[{index}]': expected an object with 'role' and 'content'", "wrong_type")
        if "role" not in item or "content" not in item:
            missing = "role" if "role" not in item else "content"
            raise RowError(f"field '{key}[{index}]': missing key '{missing}'", "message_missing_key")
        if len(item) > 2 and not _MESSAGE_KEYS.issuperset(item):
            unknown = next(k for k in item if k not in _MESSAGE_KEYS)
            raise RowError(f"field '{key}[{index}]': unrecognised key '{unknown}'", "unrecognized_key")
        role, content = item["role"], item["content"]
        if role not in ROLES:
            raise RowError(
                f"field '{key}[{index}]'.role: expected one of {', '.join(ROLES)}, got {role!r}", "unrecognized_role"
            )
        if not isinstance(content, str):
            raise RowError(f"field '{key}[{index}]'.content: expected text, got {type(content).__name__}", "wrong_type")
        if not content or content.isspace():
            raise RowError(f"field '{key}[{index}]'.content: expected non-empty text", "empty_content")
        weight = item.get("weight")
        if weight is not None and weight not in (0, 1):
            raise RowError(f"field '{key}[{index}]'.weight: expected 0 or 1, got {weight!r}", "wrong_type")
        messages.append(Message(role, content, weight))
        replies += role == "assistant"
    if need_assistant and not replies:
        raise RowError(f"field '{key}': no assistant message to learn from", "no_assistant_message")
    return messages


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
