"""Blind A/B judgments: two models answer the same message, a person sees the replies unlabelled in random order and
picks one or calls a tie. Every judgment is appended to ``judgments/judgments.jsonl``; every one with a winner (and
two different replies) becomes a preference row ``{"prompt", "chosen", "rejected"}`` in ``preferences/<pair>.jsonl``,
tunesmith's preference format, which a ``dpo`` or ``reward`` run takes as its data.

Win rate per pair of models: (wins + ties / 2) / judgments, with a 95% Wilson score interval on that proportion
(ties counted as half a win each, the usual arena convention); Wilson rather than the normal approximation because it
stays inside [0, 1] and honest at 10 judgments and at 10 of 10 wins.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.core.errors import TunesmithError
from tunesmith.core.fs import append_jsonl
from tunesmith.studio.workspace import Workspace

MAX_PENDING = 256
Z95 = 1.959964


@dataclass
class Duel:
    id: str
    prompt: str
    keys: tuple[str, str]  # the models in the order shown: reply 1, reply 2
    labels: tuple[str, str]
    replies: tuple[str, str]
    sampling: dict[str, Any]


class Arena:
    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.pending: dict[str, Duel] = {}
        self.lock = threading.Lock()

    @property
    def log(self) -> Path:
        return self.workspace.judgments / "judgments.jsonl"

    def open_duel(self, prompt: str, answers: dict[str, tuple[str, str]], sampling: dict[str, Any]) -> Duel:
        """A duel of two models' replies (``key -> (label, reply)``), shown in a random order."""
        first, second = list(answers)
        order = (first, second) if secrets.randbelow(2) == 0 else (second, first)
        duel = Duel(
            secrets.token_hex(8),
            prompt,
            order,
            (answers[order[0]][0], answers[order[1]][0]),
            (answers[order[0]][1], answers[order[1]][1]),
            sampling,
        )
        with self.lock:
            while len(self.pending) >= MAX_PENDING:
                self.pending.pop(next(iter(self.pending)))
            self.pending[duel.id] = duel
        return duel

    def judge(self, duel_id: str, choice: int, judge: str) -> dict[str, Any]:
        """Record choice 1 (the first reply), 2 (the second) or 3 (tie); the preference row when there is one."""
        if choice not in (1, 2, 3):
            raise TunesmithError("choose 1 (first reply), 2 (second reply) or 3 (tie)")
        with self.lock:
            duel = self.pending.pop(duel_id, None)
        if duel is None:
            raise TunesmithError("this pair of replies was already judged (or the studio restarted); ask again")
        winner = None if choice == 3 else duel.keys[choice - 1]
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "judge": judge.strip() or "anonymous",
            "prompt": duel.prompt,
            "models": list(duel.keys),
            "labels": list(duel.labels),
            "replies": list(duel.replies),
            "choice": {1: "first", 2: "second", 3: "tie"}[choice],
            "winner": winner,
            "sampling": duel.sampling,
        }
        append_jsonl(self.log, entry)
        preference = None
        if winner is not None and duel.replies[0].strip() != duel.replies[1].strip():
            chosen, rejected = (duel.replies[0], duel.replies[1]) if choice == 1 else (duel.replies[1], duel.replies[0])
            preference = {"prompt": duel.prompt, "chosen": chosen, "rejected": rejected}
            append_jsonl(self.preference_file(duel.keys), preference)
        return {
            "winner": winner,
            "preference": preference,
            "file": self.workspace.relative(self.preference_file(duel.keys)),
        }

    def preference_file(self, keys: tuple[str, str] | list[str]) -> Path:
        a, b = sorted(keys)
        return self.workspace.preferences / f"{_slug(a)}__vs__{_slug(b)}.jsonl"

    def judgments(self) -> list[dict[str, Any]]:
        if not self.log.is_file():
            return []
        out = []
        for line in self.log.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line
        return out

    def standings(self) -> list[dict[str, Any]]:
        """Per pair of models: judgments, wins, ties, the first model's win rate and its 95% interval."""
        pairs: dict[tuple[str, str], dict[str, Any]] = {}
        for entry in self.judgments():
            a, b = sorted(entry["models"])
            row = pairs.setdefault((a, b), {"a": a, "b": b, "labels": {}, "wins_a": 0, "wins_b": 0, "ties": 0})
            row["labels"].update(dict(zip(entry["models"], entry.get("labels", entry["models"]), strict=False)))
            key = "ties" if entry["winner"] is None else "wins_a" if entry["winner"] == a else "wins_b"
            row[key] += 1
        out = []
        for (a, b), row in pairs.items():
            n = row["wins_a"] + row["wins_b"] + row["ties"]
            rate = (row["wins_a"] + row["ties"] / 2) / n
            low, high = wilson(rate, n)
            file = self.preference_file((a, b))
            rows = sum(1 for _ in file.open(encoding="utf-8")) if file.is_file() else 0
            out.append(
                row
                | {
                    "n": n,
                    "win_rate_a": rate,
                    "ci95": [low, high],
                    "preference_file": self.workspace.relative(file),
                    "preference_rows": rows,
                }
            )
        return out


def wilson(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``p`` observed in ``n`` trials."""
    if n == 0:
        return 0.0, 1.0
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _slug(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("_") or "model"
