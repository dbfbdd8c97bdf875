"""The README's quickstart table is the rendering of the last recorded bench result, not a number typed by hand."""

from __future__ import annotations

import json

from bench.quickstart_seeds import RESULTS, readme_table, render


def test_the_readme_quickstart_table_is_the_recorded_bench_result() -> None:
    assert RESULTS.is_file(), "run bench/quickstart_seeds.py --readme and commit bench/results/quickstart_seeds.json"
    results = json.loads(RESULTS.read_text())
    assert readme_table() == render(results).strip(), "the README differs: rerun bench/quickstart_seeds.py --readme"


def test_the_recorded_result_meets_the_quickstart_bar() -> None:
    """Every seed: tuned >= base + 0.10 in accuracy with the CI's lower bound above 0, and above the base model's
    constrained (label-probability) accuracy with McNemar's p < 0.05."""
    results = json.loads(RESULTS.read_text())
    assert len(results["seeds"]) >= 3
    for seed in results["seeds"]:
        accuracy = seed["comparison"]["accuracy"]
        assert accuracy["delta"] >= 0.10 and accuracy["ci95"][0] > 0, seed["seed"]
        constrained = seed["comparison"]["accuracy_vs_base_constrained"]
        assert constrained["delta"] > 0 and constrained["p_value"] < 0.05, seed["seed"]
