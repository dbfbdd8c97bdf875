"""Duplicates: exact (hash of normalised text) and near (MinHash LSH).

``normalise`` decides what "the same text" means: Unicode NFKC, case-folded, whitespace collapsed.
Near duplicates are rows whose byte 5-gram sets (of the normalised UTF-8 text) have an estimated Jaccard
similarity >= the threshold, found with MinHash signatures and locality-sensitive hashing (LSH) over bands.

Why not datasketch (used before): its MinHash hashes every shingle for every permutation in numpy
(~3.5 µs per shingle with 128 permutations, ~15 minutes for 1M chat rows) and its in-memory LSH keeps Python
dicts per band (several GB at 1M rows). Here the shingles of thousands of rows are hashed in one numpy pass,
the signatures come from rensa (the same classic 128-permutation MinHash, in Rust, ~10 µs per row), they live
in one ``uint32`` matrix, and the LSH bands are grouped by sorting with numpy. Every candidate pair is then
checked against the threshold, as datasketch users do.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from tunesmith.core.progress import Progress

SHINGLE = 5  # bytes per shingle
CHUNK_BYTES = 2 * 2**20  # normalised text hashed per numpy pass (bounds the temporary arrays)
WINDOW = 64  # in an LSH bucket, each row is compared with the first row and at most this many rows before it
_MIX = np.uint64(0xBF58476D1CE4E5B9)


def normalise(text: str) -> str:
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    return " ".join(text.casefold().split())  # split(): runs of whitespace, like \s+, in C


def content_hash(text: str) -> str:
    """A stable 128-bit hex digest of the normalised text."""
    return hashlib.blake2b(normalise(text).encode("utf-8"), digest_size=16).hexdigest()


def _key(normalised: str) -> bytes:
    return hashlib.blake2b(normalised.encode("utf-8"), digest_size=16).digest()


def shingle_hashes(encoded: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of the byte 5-grams of many texts in one numpy pass: (flat hashes, row offsets).

    Character-level shingles suit short rows, where one changed word would change most word n-grams.
    A text shorter than a shingle is padded to one shingle.
    """
    n = SHINGLE
    if any(len(b) < n for b in encoded):
        encoded = [b.ljust(n, b"\0") for b in encoded]
    lengths = np.fromiter((len(b) for b in encoded), dtype=np.int64, count=len(encoded))
    data = np.frombuffer(b"".join(encoded), dtype=np.uint8).astype(np.uint64)
    m = len(data) - n + 1
    hashes = data[:m].copy()
    for k in range(1, n):  # polynomial hash of each window, wrapping in uint64, then mixed (splitmix-style)
        hashes *= np.uint64(1_000_003)
        hashes += data[k : k + m]
    hashes ^= hashes >> np.uint64(29)
    hashes *= _MIX
    hashes ^= hashes >> np.uint64(32)
    ends = np.cumsum(lengths)
    keep = np.ones(m, dtype=bool)
    keep[(ends[:-1, None] - n + 1 + np.arange(n - 1)).ravel()] = False  # windows that straddle two texts
    offsets = np.zeros(len(lengths) + 1, dtype=np.uint64)
    np.cumsum(lengths - n + 1, out=offsets[1:])
    return hashes[keep], offsets


def signatures(texts: Sequence[str], num_perm: int = 128, seed: int = 1, normalised: bool = False) -> np.ndarray:
    """MinHash signatures of the texts' byte 5-gram sets: a ``(len(texts), num_perm)`` uint32 matrix."""
    out = np.empty((len(texts), num_perm), dtype=np.uint32)
    chunk: list[str] = []
    done = size = 0
    with Progress(len(texts), "near-duplicates", unit="rows") as progress:
        for text in texts:
            chunk.append(text if normalised else normalise(text))
            size += len(chunk[-1])
            if size >= CHUNK_BYTES:
                out[done : done + len(chunk)] = _signature_chunk(chunk, num_perm, seed)
                progress.advance(len(chunk))
                done, chunk, size = done + len(chunk), [], 0
        if chunk:
            out[done:] = _signature_chunk(chunk, num_perm, seed)
            progress.advance(len(chunk))
    return out


def _signature_chunk(normalised: list[str], num_perm: int, seed: int) -> np.ndarray:
    import rensa

    flat, offsets = shingle_hashes([text.encode("utf-8") for text in normalised])
    digests = rensa.RMinHash.digest_matrix_from_flat_token_hashes(flat, offsets, num_perm, seed)
    return np.asarray(digests.to_rows(), dtype=np.uint32)


@lru_cache(maxsize=32)
def lsh_bands(threshold: float, num_perm: int, fp_weight: float = 0.05, fn_weight: float = 0.95) -> tuple[int, int]:
    """(bands, rows per band) minimising the weighted areas of false positives and false negatives.

    The same optimisation as datasketch's MinHashLSH; weighted for recall, since every candidate is checked.
    """
    xs = np.linspace(0.0, 1.0, 1001)
    below, above = xs <= threshold, xs >= threshold
    best, best_error = (1, num_perm), float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            p = 1 - (1 - xs**rows) ** bands
            error = fp_weight * np.trapezoid(p[below], xs[below]) + fn_weight * np.trapezoid(1 - p[above], xs[above])
            if error < best_error:
                best, best_error = (bands, rows), error
    return best


def candidate_pairs(sigs: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i, j), i > j, sharing an LSH band and with estimated Jaccard >= threshold, and that estimate."""
    n, num_perm = sigs.shape
    bands, rows = lsh_bands(threshold, num_perm)
    multipliers = np.random.default_rng(0).integers(1, 2**63, size=rows, dtype=np.uint64) | np.uint64(1)
    found: list[np.ndarray] = []
    for band in range(bands):
        block = sigs[:, band * rows : (band + 1) * rows].astype(np.uint64)
        keys = (block * multipliers).sum(axis=1, dtype=np.uint64)
        order = np.argsort(keys, kind="stable")  # stable: inside a bucket, rows stay in file order
        ordered = keys[order]
        same = ordered[1:] == ordered[:-1]
        if not same.any():
            continue
        # Every member is paired with its bucket's first row (so a big cluster still meets the row it keeps) ...
        start = np.maximum.accumulate(np.where(np.r_[False, same], 0, np.arange(n)))
        members = np.flatnonzero(start != np.arange(n))
        found.append(order[members].astype(np.int64) * n + order[start[members]])
        # ... and with the rows just before it in the bucket.
        equal = same
        for distance in range(1, WINDOW + 1):
            if distance > 1:
                equal = equal[:-1] & same[distance - 1 :]
            at = np.flatnonzero(equal)
            if not len(at):
                break
            found.append(order[at + distance].astype(np.int64) * n + order[at])
    if not found:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, np.empty(0)
    codes = np.unique(np.concatenate(found))
    first, second = codes // n, codes % n
    similarity = np.empty(len(codes))
    for start in range(0, len(codes), 100_000):
        i, j = first[start : start + 100_000], second[start : start + 100_000]
        similarity[start : start + len(i)] = (sigs[i] == sigs[j]).mean(axis=1)
    keep = similarity >= threshold
    return first[keep], second[keep], similarity[keep]


@dataclass
class Match:
    index: int  # the row found to be a duplicate
    of: int  # the row it duplicates (in the same list, or in the reference list)
    kind: str  # "exact" | "near"
    similarity: float


def find_duplicates(
    texts: Sequence[str], near: bool = True, threshold: float = 0.8, num_perm: int = 128
) -> list[Match]:
    """Rows that repeat an earlier row (the first occurrence is kept; a row is compared only with kept rows)."""
    matches: list[Match] = []
    first: dict[bytes, int] = {}
    unique: list[int] = []
    # Signatures are computed a chunk at a time as unique rows are found, so normalised texts are not all kept.
    sigs = np.empty((len(texts), num_perm), dtype=np.uint32) if near else None
    pending: list[str] = []
    size = 0
    for index, text in enumerate(texts):
        norm = normalise(text)
        key = _key(norm)
        if key in first:
            matches.append(Match(index, first[key], "exact", 1.0))
            continue
        first[key] = index
        unique.append(index)
        if sigs is not None:
            pending.append(norm)
            size += len(norm)
            if size >= CHUNK_BYTES:
                sigs[len(unique) - len(pending) : len(unique)] = _signature_chunk(pending, num_perm, 1)
                pending, size = [], 0
    del first
    if sigs is not None and len(unique) > 1:
        if pending:
            sigs[len(unique) - len(pending) : len(unique)] = _signature_chunk(pending, num_perm, 1)
        later, earlier, similarity = candidate_pairs(sigs[: len(unique)], threshold)
        # Visit rows in order; a row is a near duplicate of its most similar earlier row that was itself kept.
        order = np.lexsort((earlier, -similarity, later))
        dropped: set[int] = set()
        for i, j, s in zip(later[order].tolist(), earlier[order].tolist(), similarity[order].tolist(), strict=True):
            if i not in dropped and j not in dropped:
                dropped.add(i)
                matches.append(Match(unique[i], unique[j], "near", s))
    return sorted(matches, key=lambda m: m.index)


def find_overlap(
    texts: Sequence[str], reference: Sequence[str], near: bool = True, threshold: float = 0.8, num_perm: int = 128
) -> list[Match]:
    """Rows of ``texts`` that also occur (exactly or nearly) in ``reference``; ``of`` indexes ``reference``."""
    ref_hash: dict[str, int] = {}
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
        # One index over reference rows followed by the remaining rows; only pairs (row, reference row) count.
        sigs = signatures([*reference, *(texts[i] for i in rest)], num_perm)
        later, earlier, similarity = candidate_pairs(sigs, threshold)
        cross = (later >= len(reference)) & (earlier < len(reference))
        later, earlier, similarity = later[cross], earlier[cross], similarity[cross]
        order = np.lexsort((earlier, -similarity, later))
        seen: set[int] = set()
        for i, j, s in zip(later[order].tolist(), earlier[order].tolist(), similarity[order].tolist(), strict=True):
            if i not in seen:
                seen.add(i)
                matches.append(Match(rest[i - len(reference)], j, "near", s))
    return sorted(matches, key=lambda m: m.index)
