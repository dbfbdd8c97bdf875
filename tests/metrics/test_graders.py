"""Graders in OpenAI's JSON shape: each type against the reference libraries, the python sandbox's limits, multi
formulas, judges on a local tiny model, and OpenAI's documented examples parsed and run unchanged."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tunesmith.core.config import GradingConfig, parse_grader, parse_graders, read_grader_file
from tunesmith.core.errors import ConfigError
from tunesmith.core.formula import FormulaError, parse_formula
from tunesmith.metrics.graders import GradingContext, MissingResource, grade, load_wordnet, make_sample, render

EXAMPLES = Path(__file__).with_name("openai_graders.json")


def run(raw: dict, outputs: list[str], items: list[dict], context: GradingContext | None = None):
    return grade(parse_grader(raw), [make_sample(o) for o in outputs], items, context or GradingContext())


def check(operation: str, reference: str = "{{item.answer}}") -> dict:
    return {"type": "string_check", "name": "c", "input": "{{ sample.output_text }}", "reference": reference,
            "operation": operation}  # fmt: skip


def test_string_check_operations() -> None:
    outputs = ["Paris", "paris", "The capital is Paris.", "Lyon"]
    items = [{"answer": "Paris"}] * 4
    assert run(check("eq"), outputs, items).scores == [1, 0, 0, 0]
    assert run(check("ne"), outputs, items).scores == [0, 1, 1, 1]
    assert run(check("like"), outputs, items).scores == [1, 0, 1, 0]
    assert run(check("ilike"), outputs, items).scores == [1, 1, 1, 0]
    assert run(check("ilike", "PARIS"), outputs, items).passed == [True, True, True, False]
    missing = run(check("eq", "{{ item.nope }}"), ["Paris"], [{"answer": "Paris"}])
    assert missing.scores == [0] and "no 'nope'" in missing.errors[0] and "answer" in missing.errors[0]


def test_templates_follow_json_paths() -> None:
    sample = make_sample('{"name": "Ada", "tags": ["x", "y"]}')
    item = {"a": {"b": [10, {"c": "deep"}]}}
    assert render("{{sample.output_json.name}} {{ sample.output_json.tags[1] }}", sample, item) == "Ada y"
    assert render("{{ item.a.b[1].c }} {{item.a.b[0]}}", sample, item) == "deep 10"


def similar(metric: str, **extra: object) -> dict:
    return {"type": "text_similarity", "name": "s", "input": "{{sample.output_text}}",
            "reference": "{{item.reference}}", "evaluation_metric": metric, **extra}  # fmt: skip


OUTPUTS = ["the cat sat on the mat today", "a dog barked loudly at the mailman", "completely unrelated words here"]
REFERENCES = ["the cat sat on the mat", "the dog barked at the mailman", "the cat sat on the mat"]
ITEMS = [{"reference": r} for r in REFERENCES]


def test_text_similarity_equals_the_reference_libraries() -> None:
    from nltk.translate.gleu_score import sentence_gleu
    from rapidfuzz import fuzz
    from rouge_score import rouge_scorer
    from sacrebleu import sentence_bleu

    pairs = list(zip(OUTPUTS, REFERENCES, strict=True))
    assert run(similar("bleu"), OUTPUTS, ITEMS).scores == pytest.approx(
        [sentence_bleu(o, [r]).score / 100 for o, r in pairs]
    )
    assert run(similar("fuzzy_match"), OUTPUTS, ITEMS).scores == pytest.approx(
        [fuzz.ratio(o, r) / 100 for o, r in pairs]
    )
    gleu = [sentence_gleu([r.split()], o.split()) for o, r in pairs]  # plain words: 13a splits them the same
    assert run(similar("gleu"), OUTPUTS, ITEMS).scores == pytest.approx(gleu)
    for n in range(1, 6):
        scorer = rouge_scorer.RougeScorer([f"rouge{n}"], use_stemmer=True)
        expected = [scorer.score(r, o)[f"rouge{n}"].fmeasure for o, r in pairs]
        assert run(similar(f"rouge_{n}"), OUTPUTS, ITEMS).scores == pytest.approx(expected)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    expected = [scorer.score(r, o)["rougeL"].fmeasure for o, r in pairs]
    graded = run(similar("rouge_l", pass_threshold=0.5), OUTPUTS, ITEMS)
    assert graded.scores == pytest.approx(expected) and graded.passed == [s >= 0.5 for s in expected]


def test_cosine_uses_the_packaged_minilm_encoder() -> None:
    from tunesmith.models.embed import embed_texts

    context = GradingContext(embed=lambda texts: embed_texts(texts, "minilm-l6"))
    scores = run(similar("cosine"), [REFERENCES[0], *OUTPUTS], [ITEMS[0], *ITEMS], context).scores
    assert scores[0] == pytest.approx(1.0, abs=1e-5)  # identical text
    assert scores[1] > 0.8 > scores[3]  # near paraphrase vs unrelated words


def test_meteor_without_wordnet_is_refused_with_the_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])  # no WordNet anywhere NLTK looks
    with pytest.raises(MissingResource, match=r"(?s)WordNet.*no package on PyPI.*nltk.downloader wordnet"):
        load_wordnet()
    from tunesmith.curate.judges import grading_context

    with pytest.raises(ConfigError, match=r"eval\.graders: text_similarity meteor needs WordNet"):
        grading_context([parse_grader(similar("meteor"))], GradingConfig())


PYTHON = """
def grade(sample, item):
    text = sample["output_text"]
    if text == "loop":
        while True:
            pass
    if text == "raise":
        raise ValueError("no good")
    if text == "network":
        import urllib.request
        urllib.request.urlopen("http://127.0.0.1:9/")
    return len(text) / 10
"""


def test_python_grader_is_isolated_killed_on_timeout_and_keeps_grading() -> None:
    raw = {"type": "python", "name": "p", "source": PYTHON, "pass_threshold": 0.3}
    context = GradingContext(python_timeout_s=1.0, python_memory_mb=512)
    start = time.monotonic()
    graded = run(raw, ["abcd", "loop", "raise", "network", "ab"], [{}] * 5, context)
    assert time.monotonic() - start < 20
    assert graded.scores == [0.4, 0.0, 0.0, 0.0, 0.2]
    assert graded.passed == [True, False, False, False, False]
    assert graded.errors[0] is None and graded.errors[4] is None
    assert "timed out after 1 s" in graded.errors[1]
    assert graded.errors[2] == "ValueError: no good"
    assert "not allowed" in graded.errors[3]  # no network
    broken = run({"type": "python", "name": "b", "source": "def grade(sample, item) return 1"}, ["x"], [{}], context)
    assert broken.scores == [0.0] and "does not run: SyntaxError" in broken.errors[0]


def test_multi_formula_combines_named_graders() -> None:
    raw = {
        "type": "multi", "name": "m", "calculate_output": "0.5 * exact + 0.5 * fuzzy ^ 2",
        "graders": {"exact": check("ilike"), "fuzzy": similar("fuzzy_match")},
    }  # fmt: skip
    items = [{"answer": "Paris", "reference": "Paris"}, {"answer": "Paris", "reference": "Pariss"}]
    graded = run(raw, ["paris", "Lyon"], items)
    from rapidfuzz import fuzz

    assert graded.scores == pytest.approx([0.5 + 0.5 * (fuzz.ratio("paris", "Paris") / 100) ** 2,
                                           0.5 * (fuzz.ratio("Lyon", "Pariss") / 100) ** 2])  # fmt: skip
    assert graded.details[0]["exact"] == 1.0


def test_formulas_allow_arithmetic_only() -> None:
    formula = parse_formula("max(a, b) ^ 2 - abs(-1) + floor(2.5) + ceil(0.1) + sqrt(4) + log(exp(1))")
    assert formula.variables == {"a", "b"} and formula({"a": 0.5, "b": 0.25}) == pytest.approx(0.25 - 1 + 2 + 1 + 2 + 1)
    for bad in ("__import__('os')", "a.__class__", "a[0]", "a if b else 1", "'x'", "lambda: 1", "a and b", "f(a)"):
        with pytest.raises(FormulaError):
            parse_formula(bad)
    with pytest.raises(FormulaError, match="cannot be computed"):
        parse_formula("9 ^ 9 ^ 9")({})
    with pytest.raises(ConfigError, match=r"reads c, which is not among its graders \(a, b\)"):
        parse_grader({"type": "multi", "name": "m", "calculate_output": "a + c",
                      "graders": {"a": check("eq"), "b": check("ne")}})  # fmt: skip


def test_grader_errors_name_the_place_and_the_field(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"graders\[1\]: invalid grader\n  - operation: .*'eq', 'ne', 'like'.*'contains'"
    ):
        parse_graders([check("eq"), {**check("eq"), "name": "d", "operation": "contains"}])
    with pytest.raises(ConfigError, match="type 'regex' is not a grader type"):
        parse_grader({"type": "regex", "name": "r"})
    with pytest.raises(ConfigError, match=r"input: template \{\{ output_text \}\} must read sample"):
        parse_grader({**check("eq"), "input": "{{ output_text }}"})
    with pytest.raises(ConfigError, match="'c' repeats"):
        parse_graders([check("eq"), check("ne")])
    bad = tmp_path / "graders.json"
    bad.write_text(json.dumps([{**check("eq"), "colour": "red"}]))
    with pytest.raises(ConfigError, match=rf"{bad}\[0\]: invalid grader\n  - colour: unknown key"):
        read_grader_file(bad)


def test_openai_documented_graders_parse_and_run_unchanged(tiny_model_dir: Path) -> None:
    from tunesmith.curate.judges import grading_context

    raw = read_grader_file(EXAMPLES)
    graders = parse_graders(raw)
    assert [g.type for g in graders] == ["string_check", "text_similarity", "score_model", "python", "multi"]
    grading = GradingConfig(judge_model=str(tiny_model_dir), judge_max_new_tokens=4)  # the local judge
    context = grading_context(graders, grading)
    outputs = ['{"name": "Ada Lovelace", "email": "ada@example.org"}', "positive"]
    items = [
        {"label": "positive", "reference_answer": "Ada Lovelace", "name": "Ada Lovelace", "email": "ada@example.org"},
        {"label": "positive", "reference_answer": "positive", "name": "Bob", "email": "bob@example.org"},
    ]
    samples = [make_sample(o) for o in outputs]
    results = {g.name: grade(g, samples, items, context) for g in graders}
    assert results["Example string check grader"].scores == [0.0, 1.0]
    assert results["Example text similarity grader"].scores[1] == 1.0
    assert results["Example python grader"].scores[1] == 1.0 and results["Example python grader"].errors == [None, None]
    assert results["Example multi grader"].scores[0] == 1.0  # name and email both match
    assert "name: " in (results["Example multi grader"].errors[1] or "")  # the second reply is not JSON
    judged = results["Example score model grader"]
    assert all(0.0 <= s <= 1.0 for s in judged.scores)


def test_local_judges_are_deterministic(tiny_model_dir: Path) -> None:
    from tunesmith.curate.judges import grading_context

    score = {"type": "score_model", "name": "judge", "model": str(tiny_model_dir), "range": [1, 7],
             "input": [{"role": "user", "content": "Rate: {{ sample.output_text }}"}]}  # fmt: skip
    label = {"type": "label_model", "name": "labeler", "model": str(tiny_model_dir), "labels": ["good", "bad"],
             "passing_labels": ["good"], "input": [{"role": "user", "content": "{{sample.output_text}}"}]}  # fmt: skip
    graders = parse_graders([score, label])
    outputs = ["a fine answer", "terrible", "the cat sat on the mat"]
    first = [
        grade(
            g,
            [make_sample(o) for o in outputs],
            [{}] * 3,
            grading_context(graders, GradingConfig(judge_max_new_tokens=6)),
        )
        for g in graders
    ]
    second = [
        grade(
            g,
            [make_sample(o) for o in outputs],
            [{}] * 3,
            grading_context(graders, GradingConfig(judge_max_new_tokens=6)),
        )
        for g in graders
    ]
    assert [(r.scores, r.errors) for r in first] == [(r.scores, r.errors) for r in second]
    assert all(1 <= s <= 7 for s in first[0].scores)
    assert all(d["label"] in ("good", "bad") for d in first[1].details)
