"""Reward model: Bradley-Terry training on pairs, pairwise accuracy on held-out pairs, and the trained run as a
scorer (for ppo / grpo rewards and win-rate evaluation)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from tests.helpers.configs import pref_config
from tests.helpers.data import write_pairs
from tunesmith.core.config import RlConfig
from tunesmith.data.records import Message
from tunesmith.pipeline.run import Run
from tunesmith.recipes import reward
from tunesmith.recipes.common.reward_fns import load_source


def test_reward_model_learns_pairs_and_scores_replies(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = {
        "model": {"name": str(tiny_model_dir)},
        "task": {"name": "reward"},
        "data": {"train": str(write_pairs(tmp_path / "pairs.jsonl", 40)), "test_fraction": 0.25},
        "method": {"name": "lora", "lora": {"r": 8, "alpha": 16, "dropout": 0.0}},
        "training": {"max_steps": 10, "batch_size": 4, "max_seq_len": 64, "learning_rate": 1e-2},
        "eval": {"batch_size": 8},
        "output": {"dir": str(tmp_path / "runs"), "name": "rm"},
    }
    path = tmp_path / "rm.yaml"
    path.write_text(yaml.safe_dump(config))
    run = Run.from_file(path)
    metrics = run.run()
    assert metrics["tuned"]["pairwise_accuracy"] == 1.0 and metrics["tuned"]["mean_margin"] > 0
    assert "base" not in metrics  # a fresh score head ranks at random: no base comparison
    losses = [json.loads(line)["loss"] for line in run.dir.metrics.read_text().splitlines()]
    assert abs(losses[0] - 0.6931) < 0.05 and losses[-1] < losses[0]  # starts at log 2 (zero-ish margins)

    scorer = load_source(str(run.dir.root), RlConfig())  # as named in task.rl.reward or eval.reward_model
    prompt = [Message("user", "Sentiment of: an unseen film")]
    good, bad = scorer([prompt, prompt], ["positive", "negative"], [None, None])
    assert good > bad
    assert (run.dir.root / "report.html").is_file()

    # The reward run judges a DPO run's win rate against its base model (eval.reward_model).
    dpo_config = pref_config(
        tmp_path, tiny_model_dir, "dpo", training={"max_steps": 6}, eval={"reward_model": str(run.dir.root)}
    )
    dpo = Run.from_file(dpo_config).run()
    assert 0.0 <= dpo["tuned"]["win_rate"] <= 1.0
    assert {"mean_reward"} <= set(dpo["base"]) and {"mean_reward", "reward_accuracy"} <= set(dpo["tuned"])


def test_bradley_terry_loss_by_hand() -> None:
    class Fixed(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            return type("Out", (), {"logits": torch.tensor([[2.0], [0.5], [1.0], [1.5]])})()

    batch = {"input_ids": torch.zeros(4, 3, dtype=torch.long), "attention_mask": torch.ones(4, 3, dtype=torch.long)}
    total, pairs = reward.loss(Fixed(), batch)  # pairs: (2.0 vs 1.0), (0.5 vs 1.5)
    expected = -torch.nn.functional.logsigmoid(torch.tensor(1.0)) - torch.nn.functional.logsigmoid(torch.tensor(-1.0))
    assert pairs == 2 and torch.isclose(total, expected)
