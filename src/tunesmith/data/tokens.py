"""Token lengths of records with the model's tokenizer, and their distribution (percentiles and a histogram).

A chat is measured as the model sees it: rendered with the tokenizer's chat template (with ``as_chat``, so is
every record a chat can express). Other records (labelled text, tags, raw text) are measured as their texts
joined by newlines, with the tokenizer's special tokens.
"""

from __future__ import annotations

import contextlib
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tunesmith.data.convert import to_chat
from tunesmith.data.formats import RowError
from tunesmith.data.records import Chat, texts
from tunesmith.data.render import render_chat

BATCH = 512


@dataclass
class TokenCounter:
    """Counts tokens with ``tokenizer``; ``max_len`` (training.max_seq_len) is where training cuts an example."""

    tokenizer: Any
    max_len: int | None = None
    label_names: dict[str, str] = field(default_factory=dict)
    as_chat: bool = False  # measure records a chat can express (labelled, pairs, ...) as that chat

    def count(self, records: Sequence[Any]) -> list[int]:
        """Tokens per record, in order (tokenized in batches)."""
        lengths: list[int] = []
        for start in range(0, len(records), BATCH):
            rendered, special = [], []
            for record in records[start : start + BATCH]:
                text, with_special = self._render(record)
                rendered.append(text)
                special.append(with_special)
            plain = [t for t, s in zip(rendered, special, strict=True) if not s]
            marked = [t for t, s in zip(rendered, special, strict=True) if s]
            counts = iter(self._lengths(plain, False)), iter(self._lengths(marked, True))
            lengths += [next(counts[s]) for s in special]
        return lengths

    def _render(self, record: Any) -> tuple[str, bool]:
        """The text to tokenize, and whether the tokenizer should add its special tokens."""
        chat = record if isinstance(record, Chat) else None
        if chat is None and self.as_chat:
            with contextlib.suppress(RowError):
                chat = to_chat(record, self.label_names)
        if chat is None or not getattr(self.tokenizer, "chat_template", None):
            return "\n".join(texts(record)), True
        return render_chat(chat, self.tokenizer), False

    def _lengths(self, batch: list[str], special: bool) -> list[int]:
        if not batch:
            return []
        return [len(ids) for ids in self.tokenizer(batch, add_special_tokens=special)["input_ids"]]


def length_stats(lengths: Sequence[int], limit: int | None = None, bins: int = 10) -> dict[str, Any]:
    """Count, min, mean, percentiles, max, total and a histogram of token lengths (empty dict for none).

    With ``limit`` (the length training cuts examples to), ``trained`` is the total after that cut.
    """
    if not lengths:
        return {}
    ordered = sorted(lengths)

    def pick(q: float) -> int:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    stats: dict[str, Any] = {
        "count": len(ordered),
        "min": ordered[0],
        "mean": round(statistics.fmean(ordered), 1),
        "p50": pick(0.5),
        "p90": pick(0.9),
        "p99": pick(0.99),
        "max": ordered[-1],
        "total": sum(ordered),
        "limit": limit,
        "histogram": histogram(ordered, bins),
    }
    if limit:
        stats["over_limit"] = sum(n > limit for n in ordered)
        stats["trained"] = sum(min(n, limit) for n in ordered)
    return stats


def histogram(ordered: Sequence[int], bins: int = 10) -> list[dict[str, int]]:
    """Equal-width bins over [min, max] of sorted lengths: ``{"from", "to", "rows"}`` each."""
    low, high = ordered[0], ordered[-1]
    width = max(1, -(-(high - low + 1) // bins))
    counts = Counter((n - low) // width for n in ordered)
    return [{"from": low + b * width, "to": low + (b + 1) * width - 1, "rows": counts.get(b, 0)} for b in range(bins)]
