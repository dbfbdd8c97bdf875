"""The graders that compare two strings: ``string_check`` and ``text_similarity``.

Similarity metrics come from the field's libraries: rapidfuzz (``fuzzy_match``: normalised Indel similarity),
sacrebleu (``bleu``: sentence BLEU with its default smoothing), nltk (``gleu``, ``meteor``; words split by
sacrebleu's 13a tokenizer), rouge-score (``rouge_1`` .. ``rouge_5``, ``rouge_l``: F-measure, Porter stemmer, as
``tunesmith.metrics.generation``), and cosine similarity of sentence embeddings (``cosine``: an injected encoder,
all-MiniLM-L6-v2 by default). Every score is from 0 to 1 (cosine from -1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

Embed = Callable[[list[str]], np.ndarray]  # texts -> unit vectors, one row per text


class MissingResource(RuntimeError):
    """A metric needs something that is not installed (WordNet for meteor, an encoder for cosine)."""


def string_check(operation: str, text: str, reference: str) -> float:
    """eq / ne: case-sensitive (in)equality; like: ``text`` contains ``reference``; ilike: the same, any case."""
    if operation == "eq":
        return float(text == reference)
    if operation == "ne":
        return float(text != reference)
    if operation == "like":
        return float(reference in text)
    if operation == "ilike":
        return float(reference.casefold() in text.casefold())
    raise ValueError(f"string_check operation {operation!r}: expected eq, ne, like or ilike")


def similarity(metric: str, texts: Sequence[str], references: Sequence[str], embed: Embed | None = None) -> list[float]:
    """One score per (text, reference) pair."""
    if metric == "cosine":
        if embed is None:
            raise MissingResource("text_similarity cosine needs a sentence encoder (none was given)")
        vectors = embed([*texts, *references])
        left, right = vectors[: len(texts)], vectors[len(texts) :]
        return [float(v) for v in np.sum(left * right, axis=1)]
    score = _pairwise(metric)
    return [score(t, r) for t, r in zip(texts, references, strict=True)]


def _pairwise(metric: str) -> Callable[[str, str], float]:
    if metric == "fuzzy_match":
        from rapidfuzz import fuzz

        return lambda text, reference: fuzz.ratio(text, reference) / 100
    if metric == "bleu":
        from sacrebleu import sentence_bleu

        return lambda text, reference: sentence_bleu(text, [reference]).score / 100
    if metric == "gleu":
        from nltk.translate.gleu_score import sentence_gleu

        return lambda text, reference: float(sentence_gleu([_words(reference)], _words(text)))
    if metric == "meteor":
        from nltk.translate.meteor_score import meteor_score

        wordnet = load_wordnet()
        return lambda text, reference: float(meteor_score([_words(reference)], _words(text), wordnet=wordnet))
    if metric.startswith("rouge_"):
        kind = "rougeL" if metric == "rouge_l" else f"rouge{metric.removeprefix('rouge_')}"
        scorer = _rouge(kind)
        return lambda text, reference: scorer.score(reference, text)[kind].fmeasure
    raise ValueError(f"text_similarity evaluation_metric {metric!r} is not known")


@lru_cache(maxsize=8)
def _rouge(kind: str) -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer([kind], use_stemmer=True)


@lru_cache(maxsize=100_000)
def _words(text: str) -> list[str]:
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    return Tokenizer13a()(text).split()


def load_wordnet() -> Any:
    """NLTK's WordNet corpus, which METEOR matches synonyms with; MissingResource when it is not installed.

    No package on PyPI ships WordNet in the form NLTK reads, so it cannot come with tunesmith's dependencies:
    NLTK's own downloader fetches it once.
    """
    import nltk

    try:
        nltk.data.find("corpora/wordnet")
    except LookupError:
        try:
            nltk.data.find("corpora/wordnet.zip")
        except LookupError:
            raise MissingResource(
                "text_similarity meteor needs WordNet (METEOR matches synonyms through it), and no package on "
                "PyPI ships WordNet for NLTK, so it is not installed with tunesmith.\n"
                "  fix: run `python -m nltk.downloader wordnet` once (it downloads NLTK's copy), or use another "
                "evaluation_metric: fuzzy_match, bleu, gleu, rouge_1 .. rouge_5, rouge_l, cosine"
            ) from None
    from nltk.corpus import wordnet

    wordnet.ensure_loaded()
    return wordnet
