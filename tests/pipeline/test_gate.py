"""Graders in a real run (tiny model, CLI): scored for base and tuned with CIs, and a failed gate that blocks
export and serve until --force, which the model card then reports; the served run is a judge endpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.helpers.cli import run_cli, serving
from tests.helpers.configs import write_tiny_config
from tunesmith.core.config import GradingConfig, parse_graders
from tunesmith.curate.judges import grading_context
from tunesmith.metrics.graders import grade, make_sample
from tunesmith.pipeline.gate import GateFailed
from tunesmith.pipeline.run import Run
from tunesmith.server import serve
from tunesmith.ship.export import export_run

GRADERS = [
    {"type": "string_check", "name": "names_label", "input": "{{sample.output_text}}",
     "reference": "{{item.reference}}", "operation": "ilike"},
    {"type": "python", "name": "short",
     "source": "def grade(sample, item):\n    return float(len(sample['output_text']) < 40)\n"},
]  # fmt: skip


def test_graders_are_evaluated_and_a_failed_gate_blocks_export_and_serve(tmp_path: Path, tiny_model_dir: Path) -> None:
    graders_file = tmp_path / "graders.json"
    graders_file.write_text(json.dumps({"graders": GRADERS}))
    config = write_tiny_config(
        tmp_path,
        tiny_model_dir,
        eval={
            "max_new_tokens": 3, "batch_size": 6, "few_shot": 0, "forgetting": False, "bias_probe": False,
            "bootstrap_samples": 200, "graders": "graders.json",  # relative to the config file
            "gate": [{"check": "delta", "metric": "grader:names_label", "min": 0.9},
                     {"check": "score", "metric": "grader:short", "min": 0.0}],
        },
    )  # fmt: skip
    done = run_cli("run", str(config))
    assert done.returncode == 0, done.stderr
    assert "grader:names_label" in done.stdout and "gate: FAILED" in done.stdout
    assert "FAIL tuned - base on grader:names_label >= 0.9" in done.stdout

    run_dir = tmp_path / "runs" / "tiny"
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert [g["name"] for g in saved["eval"]["graders"]] == ["names_label", "short"]  # inlined from the file
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    comparison = json.loads((run_dir / "eval" / "comparison.json").read_text())
    for model in ("base", "tuned"):
        assert 0 <= metrics[model]["grader:names_label"] <= 1 and "grader:names_label:pass_rate" in metrics[model]
    assert comparison["grader:short"]["test"] == "paired_bootstrap" and len(comparison["grader:short"]["ci95"]) == 2
    analysis = json.loads((run_dir / "eval" / "analysis.json").read_text())
    assert len(analysis["graders"]["names_label"]["lowest"]) == 5
    row = json.loads((run_dir / "eval" / "predictions.jsonl").read_text().splitlines()[0])
    assert set(row["grades"]) == {"names_label", "short"} and set(row["grades"]["short"]) == {"base", "tuned"}
    gate = json.loads((run_dir / "eval" / "gate.json").read_text())
    assert [c["passed"] for c in gate["checks"]] == [False, True] and not gate["passed"]
    report = (run_dir / "report.html").read_text()
    assert "Graders" in report and "Evaluation gate" in report and "names_label" in report

    run = Run.from_dir(run_dir)  # in this process from here on: a CLI start costs ~10 s on 2 cores
    with pytest.raises(GateFailed) as refused:  # the CLI prints this message and exits with code 2
        export_run(run, tmp_path / "export")
    assert "the evaluation gate (eval.gate) failed, so tunesmith will not export" in str(refused.value)
    assert "tuned - base on grader:names_label >= 0.9 with its 95% CI above 0" in str(refused.value)
    assert not (tmp_path / "export").exists()
    with pytest.raises(GateFailed, match="will not serve this run"):
        serve([run], "127.0.0.1", 9, None, 16, 1024)
    assert export_run(run, tmp_path / "export", force=True).gate["passed"] is False
    card = (tmp_path / "export" / "README.md").read_text()
    assert "Exported with `--force` although the run's evaluation gate (`eval.gate`) failed" in card
    assert "**failed**: tuned - base on grader:names_label" in card
    assert json.loads((tmp_path / "export" / "export.json").read_text())["gate"]["passed"] is False

    # --force serves it; the served run is then an OpenAI-compatible endpoint a model grader can use as its judge
    asked = [{"role": "user", "content": "Rate from 0 to 10: {{ sample.output_text }}"}]
    judged = [{"type": "score_model", "name": "judge", "model": "tiny", "range": [0, 10], "input": asked},
              {"type": "label_model", "name": "labeler", "model": "tiny", "labels": ["positive", "negative"],
               "passing_labels": ["positive"], "input": asked}]  # fmt: skip
    with serving([str(run_dir), "--force"], tmp_path / "serve.log") as url:
        graders = parse_graders(judged)
        context = grading_context(graders, GradingConfig(judge_base_url=f"{url}/v1", judge_max_new_tokens=4))
        samples = [make_sample(text) for text in ("a fine film", "dull and long")]
        score, label = (grade(g, samples, [{}, {}], context) for g in graders)
    assert all(0 <= s <= 10 for s in score.scores) and len(score.errors) == 2
    assert label.scores == [float(p) for p in label.passed] and len(label.details) == 2
    assert "evaluation gate failed" in (tmp_path / "serve.log").read_text()


def test_gate_and_grader_settings_are_checked_when_the_config_loads(tmp_path: Path, tiny_model_dir: Path) -> None:
    from tunesmith.core.config import load_config
    from tunesmith.core.errors import ConfigError

    def refused(evaluation: dict, match: str) -> None:
        with pytest.raises(ConfigError, match=match):
            load_config(write_tiny_config(tmp_path, tiny_model_dir, eval=evaluation))

    refused({"gate": [{"check": "delta", "metric": "grader:nope"}]}, r"eval.gate\[0\]: grader:nope names no grader")
    refused({"gate": [{"check": "memorisation"}]}, r"the memorisation check needs eval.memorisation: true")
    refused({"gate": [{"check": "delta", "metric": "accuracy"}], "baseline": False}, "set eval.baseline: true")
    refused({"gate": [{"check": "score", "metric": "accuracy"}]}, "set min or max")
    refused({"gate": [{"check": "vibes"}]}, r"eval.gate.0: .*'delta', 'score', 'forgetting'")
    refused({"graders": "missing.json"}, "grader file not found: .*missing.json")
    bad_operation = {**GRADERS[0], "operation": "equals"}
    refused({"graders": [bad_operation]}, r"eval.graders.0.operation: expected 'eq', 'ne', 'like' or 'ilike', got")
