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

ROLES = ("system", "user", "assistant")


@dataclass
class Message:
    role: str
    content: str
    weight: float | None = None  # 0 = no loss on this assistant message; None = the task default


@dataclass
class Chat:
    """A conversation; the last assistant message is the target for prediction."""

    messages: list[Message]
    source: str = ""  # "file:line" of the row it came from
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Chat:
        return cls(
            messages=[Message(**m) for m in row["messages"]],
            source=row.get("source", ""),
            meta=row.get("meta", {}),
        )

    def prompt_messages(self) -> list[Message]:
        """Messages before the final assistant reply (what a model is asked)."""
        last = max(i for i, m in enumerate(self.messages) if m.role == "assistant")
        return self.messages[:last]

    def reference(self) -> str:
        """The final assistant reply (what a model should answer)."""
        return next(m.content for m in reversed(self.messages) if m.role == "assistant")


@dataclass
class Labeled:
    """Text (and optionally a second text, e.g. a hypothesis) with a class label."""

    text: str
    label: str
    text_pair: str | None = None
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Tagged:
    """A token sequence with one tag per token (NER, POS)."""

    tokens: list[str]
    tags: list[str]
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Pair:
    """A source text and its target (translation, summary, answer); ``context`` for reading comprehension."""

    source_text: str
    target: str
    context: str | None = None
    references: list[str] = field(default_factory=list)  # every acceptable target, when there are several
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Preference:
    """A prompt (conversation so far) with a preferred and a dispreferred reply."""

    prompt: list[Message]
    chosen: str
    rejected: str
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Feedback:
    """A prompt and one reply with a binary judgement (KTO-style): ``label`` True means desirable."""

    prompt: list[Message]
    completion: str
    label: bool
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Text:
    """Raw text for continued pre-training."""

    text: str
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


Record = Chat | Labeled | Tagged | Pair | Preference | Feedback | Text
RECORD_TYPES: dict[str, type] = {
    cls.__name__.lower(): cls for cls in (Chat, Labeled, Tagged, Pair, Preference, Feedback, Text)
}
_NOT_CONTENT = ("source", "meta", "role", "weight", "label")  # fields that are not free text


def record_to_dict(record: Record) -> dict[str, Any]:
    """A JSON-ready dict with a ``type`` key, readable by ``record_from_dict``."""
    return {"type": type(record).__name__.lower(), **asdict(record)}


def record_from_dict(row: dict[str, Any]) -> Record:
    values = {k: v for k, v in row.items() if k != "type"}
    cls = RECORD_TYPES[row.get("type", "chat")]
    for key in ("messages", "prompt"):
        if key in values and cls in (Chat, Preference, Feedback):
            values[key] = [Message(**m) for m in values[key]]
    return cls(**values)


def map_text(record: Record, fn: Callable[[str], str]) -> Record:
    """A copy of ``record`` with ``fn`` applied to every free-text string (not labels, roles or provenance)."""
    return _map(record, fn)


def _map(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        return [_map(v, fn) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {
            f.name: _map(getattr(value, f.name), fn)
            for f in dataclasses.fields(value)
            if f.name not in _NOT_CONTENT and not (isinstance(value, Tagged) and f.name == "tags")
        }
        return dataclasses.replace(value, **changes)
    return value


def texts(record: Record) -> list[str]:
    """Every free-text string of a record, in field order (what cleaning, PII and dedup look at)."""
    found: list[str] = []
    _map(record, lambda s: found.append(s) or s)
    return found


def stratum(record: Record) -> str | None:
    """The label a split should keep balanced, if the record has one."""
    if isinstance(record, Labeled):
        return record.label
    if isinstance(record, Feedback):
        return str(record.label).lower()
    return record.meta.get("label")
