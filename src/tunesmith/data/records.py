"""Typed records: everything after loading speaks these, never raw dicts."""

from __future__ import annotations

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
