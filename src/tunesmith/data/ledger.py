"""The ledger of a preparation: every row read is kept or dropped for a counted reason; changes are counted too."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tunesmith.data.rows import Reject


@dataclass
class Ledger:
    rows_in: Counter[str] = field(default_factory=Counter)  # per source file
    dropped: Counter[str] = field(default_factory=Counter)  # per reason kind
    changed: Counter[str] = field(default_factory=Counter)  # rows changed, per cleaning step
    pii: Counter[str] = field(default_factory=Counter)  # spans found, per PII type
    rejects: list[Reject] = field(default_factory=list)  # dropped rows that are problems (not row limits)
    notes: list[str] = field(default_factory=list)
    tokens: dict[str, dict[str, Any]] = field(default_factory=dict)  # token-length stats per split
    unused_columns: dict[str, list[str]] = field(default_factory=dict)  # per source: columns no record reads

    def reject(self, reject: Reject) -> None:
        self.dropped[reject.kind] += 1
        self.rejects.append(reject)

    def drop_unlisted(self, kind: str, n: int) -> None:
        """Rows left out on purpose (``data.train_rows``): counted, not listed as rejects."""
        if n:
            self.dropped[kind] += n

    def report(self, splits: dict[str, list[Any]], labels: dict[str, Counter[str]]) -> dict[str, Any]:
        kept = sum(len(rows) for rows in splits.values())
        rows_in = sum(self.rows_in.values())
        return {
            "rows": {name: len(rows) for name, rows in splits.items()},
            "rows_in": rows_in,
            "rows_in_by_file": dict(self.rows_in),
            "kept": kept,
            "dropped": dict(sorted(self.dropped.items())),
            "balanced": rows_in == kept + sum(self.dropped.values()),
            "rejected": len(self.rejects),
            "rejected_by_reason": dict(Counter(r.kind for r in self.rejects)),
            "changed": dict(sorted(self.changed.items())),
            "pii": dict(sorted(self.pii.items())),
            "labels": {name: dict(sorted(c.items())) for name, c in labels.items() if c},
            "notes": self.notes,
            "unused_columns": self.unused_columns,
            **self._token_report(),
        }

    def _token_report(self) -> dict[str, Any]:
        """Token lengths per split and the tokens one epoch trains on (after the cut to training.max_seq_len)."""
        if not self.tokens:
            return {}
        train = self.tokens.get("train") or {}
        return {
            "tokens": self.tokens,
            "train_tokens_per_epoch": train.get("trained", train.get("total", 0)),
        }
