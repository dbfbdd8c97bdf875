"""Reward functions for RL recipes and win-rate evaluation, named in the config (``task.rl.reward``).

A source is a built-in (``exact_match``, ``contains_reference``, ``format``, ``length``), a Python callable
``module:function`` called as ``fn(prompts, completions, references) -> list[float]`` (prompts are the last user
message of each conversation, references the reference reply or None), a reward-model run directory
(``task: reward``), which scores the whole conversation, or ``grader:<name>``: a grader of ``eval.graders`` (OpenAI's
grader JSON), whose score is the reward, with ``{{ item.input }}``, ``{{ item.reference }}`` and
``{{ item.messages }}`` about the prompt.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tunesmith.core.config import EvalConfig, RlConfig
from tunesmith.core.errors import ConfigError
from tunesmith.data.records import Message
from tunesmith.metrics.text import normalize as normalize_text

# (prompt messages, completions, references) -> one score per completion
Scorer = Callable[[Sequence[list[Message]], Sequence[str], Sequence[str | None]], list[float]]
PlainFn = Callable[[list[str], list[str], list[str | None]], list[float]]


def exact_match(prompts: list[str], completions: list[str], references: list[str | None]) -> list[float]:
    """1 when the completion equals the reference (case, punctuation and articles ignored)."""
    return [
        float(r is not None and normalize_text(c) == normalize_text(r))
        for c, r in zip(completions, references, strict=True)
    ]


def contains_reference(prompts: list[str], completions: list[str], references: list[str | None]) -> list[float]:
    """1 when the reference appears in the completion (normalised text)."""
    return [
        float(r is not None and normalize_text(r) in normalize_text(c))
        for c, r in zip(completions, references, strict=True)
    ]


def format_reward(pattern: str) -> PlainFn:
    """1 when the whole completion matches ``pattern`` (a regular expression)."""
    compiled = re.compile(pattern)
    return lambda prompts, completions, references: [float(bool(compiled.fullmatch(c))) for c in completions]


def length_reward(target: int) -> PlainFn:
    """1 at ``target`` characters, falling linearly to 0 at 0 or 2 x target."""
    return lambda prompts, completions, references: [max(0.0, 1 - abs(len(c) - target) / target) for c in completions]


def _plain(fn: PlainFn) -> Scorer:
    def score(prompts: Sequence[list[Message]], completions: Sequence[str], refs: Sequence[str | None]) -> list[float]:
        lasts = [next((m.content for m in reversed(p) if m.role == "user"), "") for p in prompts]
        values = fn(lasts, list(completions), list(refs))
        if len(values) != len(completions):
            raise ConfigError(f"reward function returned {len(values)} scores for {len(completions)} completions")
        return [float(v) for v in values]

    return score


def grader_reward(grader: Any, evaluation: EvalConfig) -> Scorer:
    """A grader as a reward: its score of each completion, the prompt and reference as the item."""
    from tunesmith.curate.judges import grading_context
    from tunesmith.metrics.graders import grade, make_sample

    context = grading_context([grader], evaluation.grading)

    def score(prompts: Sequence[list[Message]], completions: Sequence[str], refs: Sequence[str | None]) -> list[float]:
        items = [
            {
                "input": next((m.content for m in reversed(p) if m.role == "user"), ""),
                "reference": r if r is not None else "",
                "messages": [{"role": m.role, "content": m.content} for m in p],
            }
            for p, r in zip(prompts, refs, strict=True)
        ]
        return grade(grader, [make_sample(c) for c in completions], items, context).scores

    return score


def load_source(name: str, rl: RlConfig, evaluation: EvalConfig | None = None) -> Scorer:
    """One reward source by name (see the module docstring); ``grader:<name>`` reads ``evaluation.graders``."""
    if name.startswith("grader:"):
        graders = {g.name: g for g in (evaluation.graders if evaluation else [])}
        grader = graders.get(name.removeprefix("grader:"))
        if grader is None:
            raise ConfigError(
                f"task.rl.reward: {name!r} names no grader of eval.graders ({', '.join(graders) or 'none'})"
            )
        return grader_reward(grader, evaluation)
    builtins: dict[str, PlainFn] = {
        "exact_match": exact_match,
        "contains_reference": contains_reference,
        "format": format_reward(rl.format_pattern),
        "length": length_reward(rl.target_length),
    }
    if name in builtins:
        return _plain(builtins[name])
    if Path(name, "config.yaml").is_file():
        from tunesmith.recipes.common.reward_model import load_scorer

        return load_scorer(Path(name))
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            fn = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"task.rl.reward: cannot load {name!r} ({exc})") from None
        return _plain(fn)
    raise ConfigError(
        f"task.rl.reward: {name!r} is neither a built-in ({', '.join(builtins)}), a 'module:function' callable, "
        "a reward-model run directory (a folder with config.yaml), nor grader:<name> (a grader of eval.graders)"
    )


def build_reward(rl: RlConfig, evaluation: EvalConfig | None = None) -> Scorer:
    """The weighted sum of the configured reward sources (graders from ``evaluation.graders``)."""
    if not rl.reward:
        raise ConfigError("task.rl.reward is empty; name at least one reward (e.g. exact_match or runs/my-reward)")
    weights = rl.reward_weights or [1.0] * len(rl.reward)
    if len(weights) != len(rl.reward):
        raise ConfigError(f"task.rl.reward_weights has {len(weights)} weights for {len(rl.reward)} rewards")
    sources = [load_source(name, rl, evaluation) for name in rl.reward]

    def total(prompts: Sequence[list[Message]], completions: Sequence[str], refs: Sequence[str | None]) -> list[float]:
        scores = [0.0] * len(completions)
        for weight, source in zip(weights, sources, strict=True):
            scores = [s + weight * v for s, v in zip(scores, source(prompts, completions, refs), strict=True)]
        return scores

    return total


def eval_scorer(cfg: Any) -> Scorer | None:
    """The judge of win rates: ``eval.reward_model`` if set, else the task's own reward (ppo / grpo), else None."""
    if cfg.eval.reward_model:
        from tunesmith.recipes.common.reward_model import load_scorer

        return load_scorer(Path(cfg.eval.reward_model))
    if cfg.task.name in ("ppo", "grpo") and cfg.task.rl.reward:
        return build_reward(cfg.task.rl, cfg.eval)
    return None
