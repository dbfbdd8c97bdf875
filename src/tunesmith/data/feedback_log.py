"""Chat logs with per-reply ratings -> KTO rows (``prompt`` / ``completion`` / ``label``).

The log is JSON lines, one conversation per line: ``{"messages": [{"role": "user", "content": "..."},
{"role": "assistant", "content": "...", "rating": "up"}, ...]}``. Any assistant message may carry ``rating``:
``up`` / ``down``, ``1`` / ``-1``, ``true`` / ``false``, ``good`` / ``bad``. Each rated reply becomes one row
whose prompt is the conversation before it; unrated replies are skipped and counted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.core.errors import DataError
from tunesmith.core.fs import write_jsonl

RATINGS = {"up": True, "1": True, "+1": True, "true": True, "good": True, "down": False, "-1": False}
RATINGS |= {"false": False, "bad": False}


@dataclass
class FeedbackSummary:
    conversations: int = 0
    rows: int = 0
    desirable: int = 0
    unrated: int = 0
    rows_out: list[dict[str, Any]] = field(default_factory=list, repr=False)


def convert_log(path: Path) -> FeedbackSummary:
    """Every rated assistant reply of the log as a feedback row (see the module docstring)."""
    summary = FeedbackSummary()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not valid JSON ({exc.msg})") from None
        messages = row.get("messages") if isinstance(row, dict) else None
        if not isinstance(messages, list) or not messages:
            raise DataError(f"{where}: field 'messages': expected a non-empty list of {{role, content}} messages")
        summary.conversations += 1
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or "role" not in message or "content" not in message:
                raise DataError(f"{where}: messages[{index}]: expected an object with 'role' and 'content'")
            if message["role"] != "assistant":
                continue
            if message.get("rating") is None:
                summary.unrated += 1
                continue
            label = RATINGS.get(str(message["rating"]).strip().lower())
            if label is None:
                raise DataError(
                    f"{where}: messages[{index}].rating: expected one of {', '.join(RATINGS)}, "
                    f"got {message['rating']!r}"
                )
            if index == 0:
                raise DataError(f"{where}: messages[0] is a rated assistant reply with no prompt before it")
            prompt = [{"role": m["role"], "content": m["content"]} for m in messages[:index]]
            summary.rows_out.append({"prompt": prompt, "completion": message["content"], "label": label})
            summary.rows += 1
            summary.desirable += label
    return summary


def write_feedback(log: Path, out: Path) -> FeedbackSummary:
    summary = convert_log(log)
    if not summary.rows:
        raise DataError(f'{log}: no rated assistant replies (add "rating": "up" or "down" to assistant messages)')
    write_jsonl(out, summary.rows_out)
    return summary
