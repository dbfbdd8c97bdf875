"""Turn raw rows into Chat records: OpenAI ``messages``, ``prompt``/``completion``, or a prompt template."""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.data.load import Reject, Row
from tunesmith.data.records import ROLES, Chat, Message
from tunesmith.errors import DataError


class RowError(ValueError):
    """One row cannot become a record; the message says which field and why."""


@dataclass
class ChatFormat:
    """How rows of one file become chats."""

    kind: str  # messages | prompt_completion | template
    prompt_template: str | None = None
    completion_template: str = "{completion}"
    label_column: str = "label"
    label_names: dict[str, str] = field(default_factory=dict)
    system_prompt: str | None = None


def detect_format(path: Path, columns: list[str], requested: str, prompt_template: str | None) -> str:
    """Pick the row format from the config or, for ``auto``, from the file's columns."""
    if requested != "auto":
        return requested
    if prompt_template:
        return "template"
    if "messages" in columns:
        return "messages"
    if "prompt" in columns and "completion" in columns:
        return "prompt_completion"
    raise DataError(
        f"{path}: cannot tell the data format from its columns ({', '.join(columns)}).\n"
        "  expected: a 'messages' column (OpenAI chat), 'prompt' + 'completion' columns, "
        "or set data.prompt_template (e.g. 'Review: {sentence}') with data.completion_template"
    )


def check_columns(path: Path, columns: list[str], fmt: ChatFormat) -> None:
    """Fail before any work if the format needs a column the file does not have."""
    needed: list[str] = []
    if fmt.kind == "messages":
        needed = ["messages"]
    elif fmt.kind == "prompt_completion":
        needed = ["prompt", "completion"]
    elif fmt.kind == "template":
        needed = template_fields(fmt.prompt_template or "") + template_fields(fmt.completion_template)
    missing = [c for c in dict.fromkeys(needed) if c not in columns]
    if missing:
        raise DataError(
            f"{path}: column {', '.join(repr(c) for c in missing)} is not in the file "
            f"(columns: {', '.join(columns)}).\n  fix: rename the column or change data.prompt_template / "
            "data.completion_template / data.format"
        )


def template_fields(template: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name]
    except ValueError as exc:
        raise DataError(f"invalid template {template!r}: {exc}") from None


def rows_to_chats(path: Path, rows: list[Row], fmt: ChatFormat) -> tuple[list[Chat], list[Reject]]:
    """Convert rows; a row that cannot be converted is rejected with its reason and kept."""
    chats, rejects = [], []
    for row in rows:
        source = f"{path}:{row.line}"
        try:
            chats.append(Chat(messages=_messages(row.values, fmt), source=source))
        except RowError as exc:
            rejects.append(Reject(source, str(exc), str(row.values)[:120]))
    return chats, rejects


def _messages(values: dict[str, Any], fmt: ChatFormat) -> list[Message]:
    if fmt.kind == "messages":
        messages = _parse_messages(values.get("messages"))
    else:
        if fmt.kind == "prompt_completion":
            prompt, completion = _text(values, "prompt"), _text(values, "completion")
        else:
            fields = {k: _mapped(k, v, fmt) for k, v in values.items()}
            prompt = (fmt.prompt_template or "").format(**fields)
            completion = fmt.completion_template.format(**fields)
        if not prompt.strip():
            raise RowError("empty prompt")
        if not completion.strip():
            raise RowError("empty completion")
        messages = [Message("user", prompt), Message("assistant", completion)]
    if fmt.system_prompt and messages[0].role != "system":
        messages.insert(0, Message("system", fmt.system_prompt))
    return messages


def _mapped(key: str, value: Any, fmt: ChatFormat) -> Any:
    if key != fmt.label_column or not fmt.label_names:
        return value
    name = fmt.label_names.get(str(value).strip())
    if name is None:
        raise RowError(f"field '{key}': label {value!r} is not in data.label_names ({', '.join(fmt.label_names)})")
    return name


def _text(values: dict[str, Any], key: str) -> str:
    value = values.get(key)
    if not isinstance(value, str):
        raise RowError(f"field '{key}': expected a string, got {type(value).__name__}")
    return value


def _parse_messages(raw: Any) -> list[Message]:
    if not isinstance(raw, list) or not raw:
        raise RowError("field 'messages': expected a non-empty list of {role, content} objects")
    messages = []
    for index, item in enumerate(raw):
        where = f"field 'messages[{index}]'"
        if not isinstance(item, dict):
            raise RowError(f"{where}: expected an object with 'role' and 'content'")
        role, content = item.get("role"), item.get("content")
        if role not in ROLES:
            raise RowError(f"{where}.role: expected one of {', '.join(ROLES)}, got {role!r}")
        if not isinstance(content, str) or not content.strip():
            raise RowError(f"{where}.content: expected non-empty text")
        weight = item.get("weight")
        if weight is not None and weight not in (0, 1):
            raise RowError(f"{where}.weight: expected 0 or 1, got {weight!r}")
        messages.append(Message(role, content, weight))
    if not any(m.role == "assistant" for m in messages):
        raise RowError("field 'messages': no assistant message to learn from")
    return messages
