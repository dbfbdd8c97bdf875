"""How a record is compared and quoted: the text duplicates are judged on, and its excerpt in a reject."""

from __future__ import annotations

from tunesmith.data.records import Record, stratum, texts


def dedup_text(record: Record) -> str:
    """What duplicates are compared on: every text of the record (and its label, so relabelled rows differ)."""
    if "content" in record.meta:  # a template row: its values, not the shared template text
        return record.meta["content"]
    label = stratum(record)
    return "\n".join(texts(record)) + (f"\n{label}" if label is not None else "")


def excerpt(record: Record) -> str:
    text = " | ".join(texts(record))
    return text if len(text) <= 120 else text[:117] + "..."
