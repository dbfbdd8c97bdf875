"""Generation metrics: hand-computed cases, agreement with sacrebleu and rouge-score called directly, and a
bootstrap over generation metrics fast enough to run on every evaluation."""

from __future__ import annotations

import json
import random
import time

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from tests.helpers.paths import SHARED
from tunesmith.metrics.compare import compare
from tunesmith.metrics.generation import GENERATION_METRICS, generation_metrics, sentence_metrics
from tunesmith.recipes import sft

SCITLDR = SHARED / "scitldr" / "test.jsonl"


def scitldr_rows(n: int) -> tuple[list[str], list[list[str]]]:
    """Lead-1 summaries (the abstract's first sentence) and every reference TLDR of the first ``n`` test rows."""
    rows = [json.loads(line) for line in SCITLDR.read_text(encoding="utf-8").splitlines()[:n]]
    return [r["source"][0].strip() for r in rows], [r["target"] for r in rows]


def test_hand_computed_case() -> None:
    # 6 tokens, 5 shared: n-gram precisions 5/6, 4/5, 3/4, 2/3 and equal lengths (no brevity penalty), so
    # BLEU = (5/6 * 4/5 * 3/4 * 2/3) ** (1/4) = (1/3) ** (1/4). chrF (whitespace removed, "abcdef" vs "abcdeg"):
    # character n-gram precision = recall = 5/6, 4/5, 3/4, 2/3, 1/2, 0 for n = 1..6, averaged.
    # ROUGE-1 F = 5/6, ROUGE-2 F = 4/5, ROUGE-L: longest common subsequence 5 of 6.
    metrics = generation_metrics(["a b c d e f"], ["a b c d e g"])
    assert metrics["bleu"] == pytest.approx(100 * (1 / 3) ** 0.25)
    assert metrics["chrf"] == pytest.approx(100 * (5 / 6 + 4 / 5 + 3 / 4 + 2 / 3 + 1 / 2 + 0) / 6)
    assert metrics["rouge1"] == pytest.approx(100 * 5 / 6)
    assert metrics["rouge2"] == pytest.approx(100 * 4 / 5)
    assert metrics["rougeL"] == pytest.approx(100 * 5 / 6)
    assert generation_metrics(["the same five words here"], ["the same five words here"]) == pytest.approx(
        dict.fromkeys(GENERATION_METRICS, 100.0)
    )
    assert generation_metrics(["zzz"], ["a b"])["rouge1"] == 0.0
    assert sentence_metrics("a b c d e f", "a b c d e g") == pytest.approx(metrics)


def test_matches_sacrebleu_and_rouge_score_on_real_summaries() -> None:
    predictions, references = scitldr_rows(60)
    ours = generation_metrics(predictions, [refs[0] for refs in references])
    single = [[refs[0] for refs in references]]
    assert ours["bleu"] == pytest.approx(sacrebleu.corpus_bleu(predictions, single).score)
    assert ours["chrf"] == pytest.approx(sacrebleu.corpus_chrf(predictions, single).score)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for name in ("rouge1", "rouge2", "rougeL"):
        direct = [scorer.score(refs[0], p)[name].fmeasure for p, refs in zip(predictions, references, strict=True)]
        assert ours[name] == pytest.approx(100 * sum(direct) / len(direct))


def test_multiple_references_per_row_match_sacrebleu() -> None:
    predictions, references = scitldr_rows(60)
    assert len({len(r) for r in references}) > 1  # SciTLDR rows have different numbers of references
    width = max(len(r) for r in references)
    streams = [[refs[k] if k < len(refs) else None for refs in references] for k in range(width)]
    ours = generation_metrics(predictions, references)
    assert ours["bleu"] == pytest.approx(sacrebleu.corpus_bleu(predictions, streams).score)
    assert ours["chrf"] == pytest.approx(sacrebleu.corpus_chrf(predictions, streams).score)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    best = [scorer.score_multi(refs, p)["rougeL"].fmeasure for p, refs in zip(predictions, references, strict=True)]
    assert ours["rougeL"] == pytest.approx(100 * sum(best) / len(best))
    # More references can only help: every row keeps its first reference and gains others.
    assert ours["bleu"] > generation_metrics(predictions, [r[0] for r in references])["bleu"]


def test_a_resample_scores_like_sacrebleu_on_the_same_rows() -> None:
    """Cached per-row statistics summed over a bootstrap resample (rows repeated) give sacrebleu's corpus score."""
    predictions, references = scitldr_rows(40)
    rng = random.Random(3)
    index = [rng.randrange(40) for _ in range(40)]
    hyps, refs = [predictions[i] for i in index], [references[i][0] for i in index]
    ours = generation_metrics(hyps, refs)
    assert ours["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert ours["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)


def test_sft_free_text_scores_include_generation_metrics() -> None:
    replies = [sft.Reply("a b c d e f", 1.0), sft.Reply("Paris", 1.0)]
    metrics = sft.score(replies, ["a b c d e g", "paris"], labels=None)
    assert metrics["exact_match"] == 0.5
    assert metrics["bleu"] == pytest.approx(
        generation_metrics(["a b c d e f", "Paris"], ["a b c d e g", "paris"])["bleu"]
    )
    assert set(GENERATION_METRICS) <= set(metrics)


def test_bootstrap_over_generation_metrics_is_fast() -> None:
    """1000 paired resamples of 200 rows through sft's score: seconds, not minutes (per-row statistics cached)."""
    rng = random.Random(0)
    words = [*("the", "model", "learns", "data", "quickly", "from", "small", "examples"), "and", "large", "text"]
    refs = [" ".join(rng.choices(words, k=rng.randint(6, 20))) for _ in range(200)]
    base = [sft.Reply(" ".join(rng.choices(words, k=rng.randint(6, 20))), 1.0) for _ in range(200)]
    tuned = [sft.Reply(r if rng.random() < 0.5 else b.text, 1.0) for r, b in zip(refs, base, strict=True)]
    start = time.perf_counter()
    result = compare(lambda p, r: sft.score(p, r, None), base, tuned, refs, n_resamples=1000, seed=0)
    seconds = time.perf_counter() - start
    assert seconds < 60, f"bootstrap took {seconds:.1f} s"
    assert result["bleu"]["ci95"][0] > 0 and result["chrf"]["p_value"] < 0.01  # tuned copies half the references
