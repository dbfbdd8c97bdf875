"""Is a ``.txt`` file really a table? Judged from its first lines, before any row is read.

Many public datasets ship ``sentence<TAB>label`` lines named ``.txt``, often without a header. A file is read as
TSV when nearly every sampled line (``AGREE``) has the same number of tabs (at least one), and as CSV when nearly
every sampled line parses into the same number of comma-separated fields (at least two) with no field starting
with a space: prose has commas too, but ``word, word`` puts a space after them. The few lines that disagree are
then rejected as rows with the wrong number of fields. Anything else stays one row of text per line.
"""

from __future__ import annotations

import csv
import itertools
from collections import Counter

from tunesmith.data.lines import Lines

SAMPLE_LINES = 50
AGREE = 0.9  # share of sampled lines that must agree on the number of fields
KNOWN_NAMES = frozenset(
    ("text", "sentence", "label", "labels", "text_pair", "title", "id", "tokens", "tags", "source", "target")
)


def sniff_delimiter(lines: Lines) -> tuple[str | None, list[str]]:
    """The delimiter a text file's first lines share (``"\\t"``, ``","``), or None; and the sampled lines."""
    sample = [text for _, text, _ in itertools.islice(lines, SAMPLE_LINES * 2) if text is not None and text.strip()]
    sample = sample[:SAMPLE_LINES]
    if len(sample) < 2:
        return None, sample
    if _agree([line.count("\t") + 1 for line in sample]):
        return "\t", sample
    try:
        rows = list(csv.reader(sample))
    except csv.Error:
        return None, sample
    if _agree([len(row) for row in rows]) and not any(cell.startswith(" ") for row in rows for cell in row):
        return ",", sample
    return None, sample


def _agree(widths: list[int]) -> bool:
    width, count = Counter(widths).most_common(1)[0]
    return width >= 2 and count >= max(2, AGREE * len(widths))


def guess_header(sample: list[str], delimiter: str, names: frozenset[str] = frozenset()) -> bool:
    """Whether the first sampled line names the columns: it holds a known column name (the canonical ones or those
    ``data.columns`` maps to), or Python's ``csv.Sniffer`` finds it unlike the rows below (types, lengths)."""
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    first = next(csv.reader(sample[:1], delimiter=delimiter, quoting=quoting))
    known = KNOWN_NAMES | {n.lower() for n in names if not n.isdigit()}  # a position names no column
    if any(cell.strip().lower() in known for cell in first):
        return True
    try:
        return csv.Sniffer().has_header("\n".join(sample))
    except csv.Error:
        return False
