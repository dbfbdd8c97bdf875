"""Generation metrics: corpus BLEU and chrF (sacrebleu), ROUGE-1/2/L (rouge-score), on a 0-100 scale.

The paired bootstrap (``tunesmith.metrics.compare``) re-scores a thousand resamples of the same rows, so each
row's sufficient statistics are computed once and cached: sacrebleu's per-segment n-gram counts (which sum to
the corpus statistics: corpus BLEU and chrF of any resample are computed from the summed counts, exactly as
``corpus_score`` would) and rouge-score's per-row F-measures (corpus ROUGE is their mean). A resample then costs
a sum of small vectors instead of re-tokenising every sentence.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

GENERATION_METRICS = ("bleu", "chrf", "rouge1", "rouge2", "rougeL")
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
_BLEU_STATS = 2 + 2 * 4  # hypothesis length, reference length, matched and total n-grams for orders 1-4
_CHRF_STATS = 3 * 6  # hypothesis, reference and matched character n-grams for orders 1-6 (chrF: no word n-grams)

Reference = str | Sequence[str]


@lru_cache(maxsize=1)
def _scorers() -> tuple[object, object, object]:
    from rouge_score import rouge_scorer
    from sacrebleu.metrics import BLEU, CHRF

    return BLEU(), CHRF(), rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


@lru_cache(maxsize=200_000)
def row_statistics(prediction: str, references: tuple[str, ...]) -> np.ndarray:
    """One row's statistics: BLEU counts, chrF counts, then ROUGE-1/2/L F-measures (max over references).

    Uses sacrebleu's segment-statistics extraction (``_extract_corpus_statistics``), the same call its own
    paired bootstrap is built on; ``tests/metrics/test_generation.py`` checks the sums against ``corpus_score``.
    """
    bleu, chrf, rouge = _scorers()
    streams = [[ref] for ref in references]  # sacrebleu takes one stream per reference
    bleu_stats = bleu._extract_corpus_statistics([prediction], streams)[0]
    chrf_stats = chrf._extract_corpus_statistics([prediction], streams)[0]
    scores = rouge.score_multi(list(references), prediction)
    rouge_f = [scores[name].fmeasure for name in ROUGE_TYPES]
    return np.asarray([*bleu_stats, *chrf_stats, *rouge_f], dtype=np.float64)


def as_references(reference: Reference) -> tuple[str, ...]:
    """Every acceptable reference of a row as a tuple (a single string becomes one reference)."""
    refs = (reference,) if isinstance(reference, str) else tuple(reference)
    if not refs:
        raise ValueError("a row needs at least one reference text")
    return refs


def generation_metrics(predictions: Sequence[str], references: Sequence[Reference]) -> dict[str, float]:
    """Corpus BLEU, chrF and mean ROUGE-1/2/L F-measure (all 0-100) of predictions against their references.

    ``references[i]`` is one reference text or a list of acceptable ones for row ``i`` (multi-reference BLEU
    and chrF as sacrebleu computes them; ROUGE takes the best-matching reference, as rouge-score's
    ``score_multi`` does).
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        return dict.fromkeys(GENERATION_METRICS, 0.0)
    rows = np.stack([row_statistics(p, as_references(r)) for p, r in zip(predictions, references, strict=True)])
    return aggregate(rows)


def aggregate(rows: np.ndarray) -> dict[str, float]:
    """Corpus metrics from a (rows, statistics) array of ``row_statistics``."""
    bleu, chrf, _ = _scorers()
    totals = rows.sum(axis=0)
    bleu_totals = totals[:_BLEU_STATS].round().astype(np.int64).tolist()
    chrf_totals = totals[_BLEU_STATS : _BLEU_STATS + _CHRF_STATS].round().astype(np.int64).tolist()
    rouge_means = totals[_BLEU_STATS + _CHRF_STATS :] / len(rows)
    return {
        "bleu": float(bleu._compute_score_from_stats(bleu_totals).score),
        "chrf": float(chrf._compute_score_from_stats(chrf_totals).score),
        **{name: 100.0 * float(value) for name, value in zip(ROUGE_TYPES, rouge_means, strict=True)},
    }


def sentence_metrics(prediction: str, reference: Reference) -> dict[str, float]:
    """The metrics of one row alone (BLEU of a single sentence is unsmoothed: often 0 for short texts)."""
    return aggregate(row_statistics(prediction, as_references(reference))[None, :])
