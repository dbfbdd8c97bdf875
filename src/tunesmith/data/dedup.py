"""Duplicates: exact (hash of normalised text) and near (MinHash LSH, via datasketch).

``normalise`` decides what "the same text" means: Unicode NFKC, case-folded, whitespace collapsed.
Near duplicates are rows whose byte 5-gram sets (of the normalised UTF-8 text) have an estimated Jaccard
similarity >= the threshold.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from datasketch import LeanMinHash, MinHashLSH

_SPACE = re.compile(r"\s+")
_MAX_HASH = np.uint64((1 << 32) - 1)


def normalise(text: str) -> str:
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def content_hash(text: str) -> str:
    """A stable 128-bit hex digest of the normalised text."""
    return hashlib.blake2b(normalise(text).encode("utf-8"), digest_size=16).hexdigest()


def shingle_hashes(text: str, n: int = 5) -> np.ndarray:
    """32-bit hashes of the byte n-grams of the normalised text (all at once in numpy, no Python loop).

    Character-level shingles suit short rows, where one changed word would change most word n-grams.
    """
    data = np.frombuffer(normalise(text).encode("utf-8"), dtype=np.uint8).astype(np.uint64)
    if len(data) <= n:
        data = np.pad(data, (0, n - len(data) + 1))
    hashes = np.zeros(len(data) - n + 1, dtype=np.uint64)
    for k in range(n):  # polynomial rolling hash, wrapping in uint64, folded to 32 bits
        hashes = hashes * np.uint64(1_000_003) + data[k : len(data) - n + 1 + k]
    return np.unique((hashes ^ (hashes >> np.uint64(32))) & _MAX_HASH)


def minhashes(texts: Sequence[str], num_perm: int, seed: int = 1, chunk: int = 256) -> list[LeanMinHash]:
    """One MinHash signature per text, computed for a chunk of texts in one vectorised numpy pass.

    Hand-written because datasketch hashes every shingle in a Python loop (~10x slower); the signatures are
    plain datasketch ``LeanMinHash`` objects, so its LSH index and Jaccard estimate are used unchanged.
    """
    rng = np.random.default_rng(seed)  # multiply-shift hashing: one odd 64-bit multiplier per permutation
    a = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    out: list[LeanMinHash] = []
    for start in range(0, len(texts), chunk):
        parts = [shingle_hashes(t) for t in texts[start : start + chunk]]
        offsets = np.cumsum([0] + [len(p) for p in parts[:-1]])
        hv = np.concatenate(parts)[:, None]
        permuted = ((hv * a + b) >> np.uint64(32)).astype(np.uint32)
        for values in np.minimum.reduceat(permuted, offsets, axis=0):
            out.append(LeanMinHash(seed=seed, hashvalues=values, scheme="legacy"))
    return out


def _index(threshold: float, num_perm: int) -> MinHashLSH:
    """An LSH index tuned for recall (bands chosen weighting false negatives 0.95): every candidate is then
    checked against the threshold, so a false positive costs a comparison, a false negative a missed duplicate."""
    return MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(0.05, 0.95))


@dataclass
class Match:
    index: int  # the row found to be a duplicate
    of: int  # the row it duplicates (in the same list, or in the reference list)
    kind: str  # "exact" | "near"
    similarity: float


def find_duplicates(
    texts: Sequence[str], near: bool = True, threshold: float = 0.8, num_perm: int = 128
) -> list[Match]:
    """Rows that repeat an earlier row (the first occurrence is kept)."""
    matches: list[Match] = []
    first: dict[str, int] = {}
    unique: list[int] = []
    for index, text in enumerate(texts):
        key = content_hash(text)
        if key in first:
            matches.append(Match(index, first[key], "exact", 1.0))
        else:
            first[key] = index
            unique.append(index)
    if near and len(unique) > 1:
        signatures = minhashes([texts[i] for i in unique], num_perm)
        lookup = dict(zip(unique, signatures, strict=True))
        lsh = _index(threshold, num_perm)
        for index, signature in lookup.items():
            best = _best(lsh.query(signature), signature, lookup, threshold)
            if best is not None:
                matches.append(Match(index, best[0], "near", best[1]))
            else:
                lsh.insert(index, signature)
    return sorted(matches, key=lambda m: m.index)


def find_overlap(
    texts: Sequence[str], reference: Sequence[str], near: bool = True, threshold: float = 0.8, num_perm: int = 128
) -> list[Match]:
    """Rows of ``texts`` that also occur (exactly or nearly) in ``reference``; ``of`` indexes ``reference``."""
    ref_hash = {}
    for index, text in enumerate(reference):
        ref_hash.setdefault(content_hash(text), index)
    matches = []
    rest = []
    for index, text in enumerate(texts):
        hit = ref_hash.get(content_hash(text))
        if hit is not None:
            matches.append(Match(index, hit, "exact", 1.0))
        else:
            rest.append(index)
    if near and rest and reference:
        ref_sigs = minhashes(reference, num_perm)
        lsh = _index(threshold, num_perm)
        for index, signature in enumerate(ref_sigs):
            lsh.insert(index, signature)
        for index, signature in zip(rest, minhashes([texts[i] for i in rest], num_perm), strict=True):
            best = _best(lsh.query(signature), signature, ref_sigs, threshold)
            if best is not None:
                matches.append(Match(index, best[0], "near", best[1]))
    return sorted(matches, key=lambda m: m.index)


def _best(candidates: Iterable[int], signature: LeanMinHash, lookup: Any, cut: float) -> tuple[int, float] | None:
    """The most similar LSH candidate whose estimated Jaccard similarity really reaches the threshold."""
    best = None
    for candidate in candidates:
        similarity = signature.jaccard(lookup[candidate])
        if similarity >= cut and (best is None or similarity > best[1]):
            best = (candidate, similarity)
    return best
