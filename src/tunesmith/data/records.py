"""Typed records: everything after loading speaks these, never raw dicts.

Every input format normalises to one of: ``Chat`` (conversations), ``Labeled`` (text classification),
``Tagged`` (token tagging), ``Pair`` (source -> target, e.g. translation, summarisation, QA), ``Preference``
(chosen vs rejected reply), ``Feedback`` (one reply judged good or bad) and ``Text`` (raw text).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from tunesmith.data.tool_text import reply_text

ROLES = ("system", "user", "assistant", "tool")


@dataclass(slots=True)
class Message:
    role: str
    content: str  # "" for an assistant message that only calls tools
    weight: float | None = None  # 0 = no loss on this assistant message; None = the task default
    tool_calls: list[dict[str, Any]] | None = None  # assistant: OpenAI's calls, arguments as a JSON string
    tool_call_id: str | None = None  # tool: the call this message answers


@dataclass(slots=True)
class Chat:
    """A conversation; the last assistant message is the target for prediction."""

    messages: list[Message]
    source: str = ""  # "file:line" of the row it came from
    meta: dict[str, Any] = field(default_factory=dict)
    tools: list[dict[str, Any]] | None = None  # OpenAI's function definitions the assistant may call

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Chat:
        return cls(
            messages=[Message(**m) for m in row["messages"]],
            source=row.get("source", ""),
            meta=row.get("meta", {}),
            tools=row.get("tools"),
        )

    def prompt_messages(self) -> list[Message]:
        """Messages before the final assistant reply (what a model is asked)."""
        last = max(i for i, m in enumerate(self.messages) if m.role == "assistant")
        return self.messages[:last]

    def reference(self) -> str:
        """The final assistant reply (what a model should answer); its tool calls in the fallback tool format."""
        return next(reply_text(m.content, m.tool_calls) for m in reversed(self.messages) if m.role == "assistant")


@dataclass(slots=True)
class Labeled:
    """Text (and optionally a second text, e.g. a hypothesis) with a class label."""

    text: str
    label: str
    text_pair: str | None = None
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Tagged:
    """A token sequence with one tag per token (NER, POS)."""

    tokens: list[str]
    tags: list[str]
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Pair:
    """A source text and its target (translation, summary, answer); ``context`` for reading comprehension."""

    source_text: str
    target: str
    context: str | None = None
    references: list[str] = field(default_factory=list)  # every acceptable target, when there are several
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Preference:
    """A prompt (conversation so far) with a preferred and a dispreferred reply."""

    prompt: list[Message]
    chosen: str
    rejected: str
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Feedback:
    """A prompt and one reply with a binary judgement (KTO-style): ``label`` True means desirable."""

    prompt: list[Message]
    completion: str
    label: bool
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Text:
    """Raw text for continued pre-training."""

    text: str
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


Record = Chat | Labeled | Tagged | Pair | Preference | Feedback | Text
RECORD_TYPES: dict[str, type] = {
    cls.__name__.lower(): cls for cls in (Chat, Labeled, Tagged, Pair, Preference, Feedback, Text)
}
_NOT_CONTENT = ("source", "meta", "role", "weight", "label", "tools", "tool_calls", "tool_call_id")  # not free text


def record_to_dict(record: Record) -> dict[str, Any]:
    """A JSON-ready dict with a ``type`` key, readable by ``record_from_dict``; tool fields only where set."""
    values = asdict(record)
    if isinstance(record, Chat | Preference | Feedback):
        if values.get("tools") is None:
            values.pop("tools", None)
        for message in values["messages" if isinstance(record, Chat) else "prompt"]:
            for key in ("tool_calls", "tool_call_id"):
                if message[key] is None:
                    del message[key]
    return {"type": type(record).__name__.lower(), **values}


def record_from_dict(row: dict[str, Any]) -> Record:
    values = {k: v for k, v in row.items() if k != "type"}
    cls = RECORD_TYPES[row.get("type", "chat")]
    for key in ("messages", "prompt"):
        if key in values and cls in (Chat, Preference, Feedback):
            values[key] = [Message(**m) for m in values[key]]
    return cls(**values)


def map_text(record: Record, fn: Callable[[str], str]) -> Record:
    """``record`` with ``fn`` applied to every free-text string (not labels, roles or provenance).

    Copy on write: a record (or message) whose texts ``fn`` leaves unchanged is returned as is, not copied.
    """
    return _map(record, fn)


def _text_fields(cls: type) -> tuple[str, ...]:
    names = _TEXT_FIELDS.get(cls)
    if names is None:
        names = tuple(
            f.name
            for f in dataclasses.fields(cls)
            if f.name not in _NOT_CONTENT and not (cls is Tagged and f.name == "tags")
        )
        _TEXT_FIELDS[cls] = names
    return names


_TEXT_FIELDS: dict[type, tuple[str, ...]] = {}


def _map(value: Any, fn: Callable[[str], str]) -> Any:
    if type(value) is Chat:  # the common record, without the generic walk
        messages = value.messages
        for index, message in enumerate(value.messages):
            content = fn(message.content)
            if content is not message.content and content != message.content:
                if messages is value.messages:
                    messages = list(messages)
                messages[index] = dataclasses.replace(message, content=content)
        return value if messages is value.messages else dataclasses.replace(value, messages=messages)
    if isinstance(value, str):
        new = fn(value)
        return value if new is value or new == value else new
    if isinstance(value, list):
        items = [_map(v, fn) for v in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {}
        for name in _text_fields(type(value)):
            old = getattr(value, name)
            new = _map(old, fn)
            if new is not old:
                changes[name] = new
        return dataclasses.replace(value, **changes) if changes else value
    return value


def texts(record: Record) -> list[str]:
    """Every free-text string of a record, in field order (what cleaning, PII and dedup look at)."""
    found: list[str] = []
    _collect(record, found)
    return found


def _collect(value: Any, found: list[str]) -> None:
    if type(value) is Chat:
        found += [message.content for message in value.messages]
    elif isinstance(value, str):
        found.append(value)
    elif isinstance(value, list):
        for item in value:
            _collect(item, found)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for name in _text_fields(type(value)):
            _collect(getattr(value, name), found)


def stratum(record: Record) -> str | None:
    """The label a split should keep balanced, if the record has one."""
    if isinstance(record, Labeled):
        return record.label
    if isinstance(record, Feedback):
        return str(record.label).lower()
    return record.meta.get("label")
