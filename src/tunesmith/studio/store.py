"""Labels edited by people: each change re-reads the file under a lock, checks nobody changed that row since it was
shown, writes the file atomically and appends one line to the audit trail ``annotations.jsonl`` beside it.

Two browser tabs (or two people) saving at once therefore never overwrite each other: changes to different rows
are merged (each save applies to the file as it is now), and a change to a row someone else changed since it was
shown is refused with a message saying who changed it to what (optimistic concurrency), so nothing is lost.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock

from tunesmith.core.errors import DataError, TunesmithError
from tunesmith.data.labelfile import MODEL, LabelFile, LabelSet, label_text, read_label_file, writable_kind

TRAIL = "annotations.jsonl"
HUMAN = "human"
LOCK_TIMEOUT = 30


class Conflict(TunesmithError):
    """The row changed since the person saw it; their change was not applied."""


def text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


def trail_path(path: Path) -> Path:
    return path.parent / TRAIL


def _lock(path: Path) -> FileLock:
    return FileLock(str(path.parent / f".{path.name}.lock"), timeout=LOCK_TIMEOUT)


def read_trail(path: Path) -> list[dict[str, Any]]:
    """The trail entries about ``path`` (a torn last line, from a kill mid-append, is skipped)."""
    trail = trail_path(path)
    if not trail.is_file():
        return []
    entries = []
    for line in trail.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if entry.get("file") == path.name:
            entries.append(entry)
    return entries


@dataclass
class Change:
    row: int  # position among the file's readable rows
    text_hash: str  # of the row's text as shown, so a file edited elsewhere is noticed
    expected: str | None  # the label the person saw
    label: str
    annotator: str


def apply_change(path: Path, labels: LabelSet, change: Change, text_column: str | None = None) -> dict[str, Any]:
    """Set one row's label as a person's; return the trail entry. Raise Conflict or DataError, changing nothing."""
    path = Path(path)
    writable_kind(path)
    new = labels.check(change.label, f"{path}: row {change.row}")
    annotator = change.annotator.strip() or "annotator"
    with _lock(path):
        data = read_label_file(path, text_column)
        if data.rejects and data.kind != "jsonl":
            first = data.rejects[0]
            raise DataError(
                f"{path}: {len(data.rejects)} rows cannot be read (first: {first.source}: {first.reason}); a "
                f"{data.kind.upper()} file is rewritten whole, so it is not edited until they are fixed"
            )
        if not 0 <= change.row < len(data.items) or text_hash(data.text(data.items[change.row])) != change.text_hash:
            raise Conflict(
                f"{path}: row {change.row} is not the row you saw (the file was edited elsewhere); reload the file"
            )
        item = data.items[change.row]
        old, old_source = item.label(data.label_column), item.source
        if old != label_text(change.expected):
            last = next((e for e in reversed(read_trail(path)) if e["row"] == change.row), None)
            who = f" by {last['annotator']} at {last['time']}" if last else " elsewhere"
            raise Conflict(
                f"row {change.row} (line {item.line}) was changed to {old!r}{who} after you opened it; "
                f"your choice {new!r} was not saved. The row now shows the current label: choose again."
            )
        item.values[data.label_column] = new
        item.values["label_source"] = HUMAN
        item.values["annotator"] = annotator
        data.save()
        entry = {
            "file": path.name,
            "row": change.row,
            "line": item.line,
            "text_hash": change.text_hash,
            "old_label": old,
            "new_label": new,
            "old_source": old_source or (HUMAN if old is not None else None),
            "source": HUMAN,
            "annotator": annotator,
            "action": "accept" if old == new else "change",
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        _append(trail_path(path), entry)
    return entry


def _append(path: Path, entry: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def load_rows(
    path: Path, labels: LabelSet | None, audit: dict[str, Any] | None = None, text_column: str | None = None
) -> dict[str, Any]:
    """The file's rows in the order a person should look at them, with progress and agreement."""
    path = Path(path)
    with _lock(path):
        data = read_label_file(path, text_column)
    trail = read_trail(path)
    labels = labels or _labels_in(data)
    reviewed = {e["row"] for e in trail if e.get("text_hash") == _hash_of(data, e["row"])}
    flagged = _flagged(data, audit)
    rows = []
    for item in data.items:
        label = item.label(data.label_column)
        flag = flagged.get(item.index)
        rows.append(
            {
                "row": item.index,
                "line": item.line,
                "text": data.text(item),
                "text_hash": text_hash(data.text(item)),
                "label": label,
                "source": item.source or (HUMAN if label is not None else None),
                "annotator": item.values.get("annotator"),
                "confidence": item.values.get("confidence"),
                "suggested": flag["suggested"] if flag else None,
                "rank": flag["rank"] if flag else None,
                "reviewed": item.index in reviewed,
                "outside_label_set": label is not None and label not in labels.values,
            }
        )
    rows.sort(key=_need)
    counts = {"rows": len(rows), "reviewed": len(reviewed), "unlabelled": sum(r["label"] is None for r in rows)}
    counts["by_model"] = sum(r["source"] == MODEL for r in rows)
    counts["flagged"] = sum(r["rank"] is not None for r in rows)
    return {
        "file": str(path),
        "labels": list(labels.values),
        "words": list(labels.words),
        "rows": rows,
        "progress": counts,
        "unreadable": [r.to_dict() for r in data.rejects],
        "agreement": agreement(trail),
    }


def _need(row: dict[str, Any]) -> tuple:
    """Likely errors first (audit rank), then unlabelled rows, then model labels by rising confidence; reviewed last."""
    if row["reviewed"]:
        return (4, row["row"])
    if row["rank"] is not None:
        return (0, row["rank"])
    if row["label"] is None:
        return (1, row["row"])
    if row["source"] == MODEL:
        return (2, float(row["confidence"] or 0.0), row["row"])
    return (3, row["row"])


def _hash_of(data: LabelFile, row: int) -> str | None:
    return text_hash(data.text(data.items[row])) if 0 <= row < len(data.items) else None


def _labels_in(data: LabelFile) -> LabelSet:
    found = sorted({label for i in data.items if (label := i.label(data.label_column)) is not None})
    if len(found) < 2:
        raise DataError(
            f"{data.path}: the file has {len(found)} distinct labels, so the label set cannot be inferred.\n"
            "  fix: give the labels, e.g. positive,negative"
        )
    return LabelSet.parse(found)


def _flagged(data: LabelFile, audit: dict[str, Any] | None) -> dict[int, dict[str, Any]]:
    """Audit label issues that still match the file (same row index, line and text)."""
    if not audit:
        return {}
    out = {}
    for rank, issue in enumerate(audit.get("label_issues", {}).get("rows", [])):
        i = issue.get("index", -1)
        same = 0 <= i < len(data.items) and data.items[i].line == issue.get("line")
        if same and data.text(data.items[i]).startswith(issue["text"].removesuffix("...")):
            out[i] = {"rank": rank, "suggested": issue.get("suggested")}
    return out


def agreement(trail: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cohen's kappa between every two annotators over the rows both labelled (each one's latest label)."""
    from sklearn.metrics import cohen_kappa_score

    latest: dict[str, dict[tuple[int, str], str]] = defaultdict(dict)
    for entry in trail:
        latest[entry["annotator"]][(entry["row"], entry.get("text_hash", ""))] = entry["new_label"]
    names = sorted(latest)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            common = sorted(set(latest[a]) & set(latest[b]))
            if len(common) < 2:
                continue
            x, y = [latest[a][k] for k in common], [latest[b][k] for k in common]
            kappa = 1.0 if x == y else float(cohen_kappa_score(x, y))
            agree = sum(p == q for p, q in zip(x, y, strict=True)) / len(common)
            out.append({"a": a, "b": b, "rows": len(common), "kappa": round(kappa, 4), "agreement": round(agree, 4)})
    return out


def agreement_with_file(path: Path, other: Path, text_column: str | None = None) -> dict[str, Any]:
    """Cohen's kappa between this file's labels and a second annotator's file, rows matched by their text."""
    from sklearn.metrics import cohen_kappa_score

    mine, theirs = read_label_file(path, text_column), read_label_file(other, text_column)
    by_text = {mine.text(i): i.label(mine.label_column) for i in mine.items}
    pairs = [
        (by_text[t], label)
        for i in theirs.items
        if (label := i.label(theirs.label_column)) is not None and by_text.get(t := theirs.text(i)) is not None
    ]
    if len(pairs) < 2:
        raise DataError(f"{other}: fewer than two labelled rows share their text with {path}; nothing to compare")
    x, y = zip(*pairs, strict=True)
    kappa = 1.0 if x == y else float(cohen_kappa_score(x, y))
    agree = sum(p == q for p, q in pairs) / len(pairs)
    return {"a": str(path), "b": str(other), "rows": len(pairs), "kappa": round(kappa, 4), "agreement": round(agree, 4)}
