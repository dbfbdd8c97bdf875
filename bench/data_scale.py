"""Data preparation at scale: synthetic chat rows with planted exact and near duplicates.

    .venv/bin/python bench/data_scale.py --rows 1000000      # the issue's target size
    .venv/bin/python bench/data_scale.py --rows 100000       # a quicker run

Times validate (read + parse into records), clean, exact dedup and near-duplicate detection separately, and
reports peak RSS. Not a test: run it by hand and record the figures in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import tempfile
import time
from pathlib import Path

from tunesmith.config import DataConfig
from tunesmith.data.dedup import content_hash, find_duplicates
from tunesmith.data.prepare import clean_records, dedup_text, load_records
from tunesmith.data.report import Ledger

WORDS = [
    "model",
    "data",
    "train",
    "token",
    "layer",
    "value",
    "river",
    "mountain",
    "city",
    "music",
    "garden",
    "paper",
    "window",
    "market",
    "energy",
    "signal",
    "story",
    "table",
    "light",
    "sound",
    "number",
    "letter",
    "answer",
    "question",
    "reason",
    "system",
    "method",
    "result",
    "power",
    "water",
    "friend",
]


def synthetic_rows(n: int, seed: int = 0) -> list[dict]:
    """n chat rows: 90% unique, 5% exact copies (different case/spacing), 5% near copies (one word changed)."""
    rng = random.Random(seed)
    unique = int(n * 0.9)
    rows = []
    for i in range(unique):
        question = f"Question {i}: " + " ".join(rng.choices(WORDS, k=12)) + "?"
        answer = " ".join(rng.choices(WORDS, k=25)) + "."
        rows.append({"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]})
    for _ in range(int(n * 0.05)):
        source = rows[rng.randrange(unique)]["messages"]
        rows.append({"messages": [{**m, "content": "  " + m["content"].upper() + " "} for m in source]})
    while len(rows) < n:
        source = rows[rng.randrange(unique)]["messages"]
        words = source[1]["content"].split()
        words[rng.randrange(len(words))] = rng.choice(WORDS)
        rows.append({"messages": [source[0], {"role": "assistant", "content": " ".join(words)}]})
    rng.shuffle(rows)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--skip-near", action="store_true", help="Skip near-duplicate detection.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "chat.jsonl"
        with path.open("w", encoding="utf-8") as handle:
            for row in synthetic_rows(args.rows):
                handle.write(json.dumps(row) + "\n")
        results: dict[str, float | int | str] = {"rows": args.rows, "file_mb": round(path.stat().st_size / 2**20, 1)}

        start = time.perf_counter()
        loaded = load_records(str(path), DataConfig(train=str(path)))
        results["validate_s"] = round(time.perf_counter() - start, 1)

        start = time.perf_counter()
        records = clean_records(loaded.records, DataConfig(train="x").clean, Ledger())
        results["clean_s"] = round(time.perf_counter() - start, 1)

        start = time.perf_counter()
        seen: set[str] = set()
        exact = 0
        texts = [dedup_text(r) for r in records]
        for text in texts:
            key = content_hash(text)
            exact += key in seen
            seen.add(key)
        results["exact_dedup_s"] = round(time.perf_counter() - start, 1)
        results["exact_duplicates"] = exact
        total = results["validate_s"] + results["clean_s"] + results["exact_dedup_s"]
        results["validate_clean_exact_rows_per_s"] = round(args.rows / total)

        if not args.skip_near:
            start = time.perf_counter()
            matches = find_duplicates(texts, near=True)
            results["near_dedup_s"] = round(time.perf_counter() - start, 1)
            results["near_duplicates"] = sum(m.kind == "near" for m in matches)
        results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
