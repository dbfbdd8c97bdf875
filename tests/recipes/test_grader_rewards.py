"""Graders as RL rewards: alone or weighted with the built-in rewards, checked against eval.graders, and used by a
real (tiny) GRPO run, whose evaluation scores the same grader for base and tuned."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.configs import write_tiny_config
from tunesmith.core.config import EvalConfig, RlConfig, load_config
from tunesmith.core.errors import ConfigError
from tunesmith.data.records import Message
from tunesmith.recipes.common.reward_fns import build_reward

SAYS_REFERENCE = {"type": "string_check", "name": "says_reference", "input": "{{ sample.output_text }}",
                  "reference": "{{ item.reference }}", "operation": "ilike"}  # fmt: skip
ECHO = "def grade(sample, item):\n    return float(item['input'] in sample['output_text'])\n"
ASKED_ABOUT = {"type": "python", "name": "echoes_prompt", "source": ECHO}


def test_graders_reward_alone_and_mixed_with_builtins() -> None:
    evaluation = EvalConfig(graders=[SAYS_REFERENCE, ASKED_ABOUT])
    prompts = [[Message("user", "say cat")], [Message("user", "say dog")], [Message("user", "say cat")]]
    completions, references = ["The CAT.", "say dog", "cat"], ["cat", "dog", "cat"]
    alone = build_reward(RlConfig(reward=["grader:says_reference"]), evaluation)
    assert alone(prompts, completions, references) == [1.0, 1.0, 1.0]
    rl = RlConfig(reward=["grader:echoes_prompt", "exact_match"], reward_weights=[2.0, 0.5])
    assert build_reward(rl, evaluation)(prompts, completions, references) == [
        0.5,
        2.0,
        0.5,
    ]  # exact_match ignores case, articles and punctuation


def test_a_reward_naming_no_grader_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    config = write_tiny_config(tmp_path, tiny_model_dir, task={"name": "grpo", "rl": {"reward": ["grader:nope"]}})
    with pytest.raises(ConfigError, match=r"task.rl.reward: 'grader:nope' names no grader of eval.graders \(none\)"):
        load_config(config)


def test_grpo_trains_on_a_grader_reward(tmp_path: Path, tiny_model_dir: Path) -> None:
    from tunesmith.pipeline.run import Run

    config = write_tiny_config(
        tmp_path,
        tiny_model_dir,
        task={"name": "grpo", "rl": {"reward": ["grader:says_reference"], "num_generations": 2, "max_new_tokens": 4}},
        training={"max_steps": 2, "batch_size": 2, "max_seq_len": 64},
        eval={"max_new_tokens": 4, "bootstrap_samples": 200, "graders": [SAYS_REFERENCE]},
    )
    run = Run.from_file(config)
    run.run()
    steps = [json.loads(line) for line in (run.dir.metrics).read_text().splitlines()]
    assert len(steps) == 2 and all(0.0 <= s["reward"] <= 1.0 for s in steps)
    metrics = json.loads((run.dir.eval / "metrics.json").read_text())  # the same grader, evaluated
    assert {"grader:says_reference", "grader:says_reference:pass_rate"} <= set(metrics["base"]) & set(metrics["tuned"])
    comparison = json.loads((run.dir.eval / "comparison.json").read_text())
    assert comparison["grader:says_reference"]["test"] == "paired_bootstrap"
