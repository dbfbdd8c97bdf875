"""How a record is compared and quoted: the text duplicates are judged on, and its excerpt in a reject."""

from __future__ import annotations

import json

from tunesmith.data.records import Chat, Record, stratum, texts


def dedup_text(record: Record) -> str:
    """What duplicates are compared on: every text of the record (and its label, so relabelled rows differ; and
    its tool calls, so chats differing only in a call's arguments differ)."""
    if "content" in record.meta:  # a template row: its values, not the shared template text
        return record.meta["content"]
    label = stratum(record)
    calls = (
        [c["function"] for m in record.messages if m.tool_calls for c in m.tool_calls]
        if isinstance(record, Chat)
        else []
    )
    tail = f"\n{json.dumps(calls, ensure_ascii=False)}" if calls else ""
    return "\n".join(texts(record)) + (f"\n{label}" if label is not None else "") + tail


def excerpt(record: Record) -> str:
    text = " | ".join(texts(record))
    return text if len(text) <= 120 else text[:117] + "..."
