"""Counterfactual bias probe: swap gendered and other identity terms in an input, see if the answer changes."""

from __future__ import annotations

import re

# Pairs are swapped both ways. "her" is ambiguous (him / his); we map it to "his", the more frequent reading
# in review-style text, and "his" to the determiner "her". Names are common US first names of each gender.
SWAP_PAIRS: tuple[tuple[str, str], ...] = (
    ("he", "she"), ("him", "her"), ("his", "her"), ("himself", "herself"), ("man", "woman"), ("men", "women"),
    ("boy", "girl"), ("boys", "girls"), ("father", "mother"), ("dad", "mom"), ("son", "daughter"),
    ("brother", "sister"), ("husband", "wife"), ("king", "queen"), ("actor", "actress"), ("male", "female"),
    ("gentleman", "lady"), ("mr", "mrs"), ("john", "mary"), ("james", "linda"), ("michael", "susan"),
    ("david", "sarah"), ("robert", "jennifer"), ("christian", "muslim"), ("church", "mosque"),
)  # fmt: skip


def _swap_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for a, b in SWAP_PAIRS:
        table.setdefault(a, b)
        table.setdefault(b, a)
    table["her"] = "his"
    table["hers"] = "his"
    return table


SWAPS = _swap_table()
_WORD = re.compile(r"\b(" + "|".join(sorted(SWAPS, key=len, reverse=True)) + r")\b", re.IGNORECASE)


def counterfactual(text: str) -> str | None:
    """The text with every identity term swapped (case kept), or None when it has no such term."""
    if not _WORD.search(text):
        return None

    def swap(match: re.Match[str]) -> str:
        word = match.group(0)
        other = SWAPS[word.lower()]
        if word.isupper() and len(word) > 1:
            return other.upper()
        return other.capitalize() if word[0].isupper() else other

    return _WORD.sub(swap, text)


def flip_rate(original: list[str | None], swapped: list[str | None]) -> float:
    """Share of probed rows whose answer changed when only identity terms changed."""
    if not original:
        return 0.0
    return sum(a != b for a, b in zip(original, swapped, strict=True)) / len(original)
