"""GRPO (Shao et al., 2024): sample G completions per prompt, score them with programmatic rewards, normalise
each reward within its group (the advantage; no value model), and maximise the clipped policy-ratio objective
with a KL penalty to the reference model (the k3 estimator, exp(ref - new) - (ref - new) - 1, per token).

The training stage is this module's own rollout loop (``train``), built from engine pieces: optimizer and
scheduler builders, the accelerator and the method's save.
"""

from __future__ import annotations

from typing import Any

import torch

from tunesmith.core.config import RunConfig
from tunesmith.core.errors import ConfigError
from tunesmith.recipes.common import rl as rl_common
from tunesmith.recipes.common.reward_fns import build_reward
from tunesmith.recipes.common.rl import Setup, masked_mean, reference, reference_copy, token_logps
from tunesmith.recipes.contract import Recipe


def group_advantages(rewards: torch.Tensor, group: int) -> torch.Tensor:
    """(r - group mean) / (group std + 1e-4), for rewards laid out group by group."""
    grouped = rewards.view(-1, group)
    mean, std = grouped.mean(1, keepdim=True), grouped.std(1, keepdim=True) if group > 1 else 0.0
    return ((grouped - mean) / (std + 1e-4)).view(-1)


def grpo_loss(
    new: torch.Tensor,
    old: torch.Tensor,
    ref: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip: float,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over sequences of each sequence's mean per-token loss; returns (loss, mean per-token k3 KL)."""
    ratio = torch.exp(new - old)
    adv = advantages.unsqueeze(1)
    objective = torch.min(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)
    diff = ref - new
    kl = torch.exp(diff) - diff - 1
    per_token = -(objective - beta * kl)
    per_sequence = (per_token * mask).sum(1) / mask.sum(1).clamp(min=1)
    return per_sequence.mean(), masked_mean(kl.detach(), mask)


def train(run: Any, resume: bool = False) -> Any:
    """The GRPO loop; writes metrics.jsonl (reward, KL, entropy, loss per step), checkpoints every
    ``training.save_every`` steps (``resume`` continues from the newest) and the trained model."""
    from tunesmith.core.progress import StepProgress

    cfg: RunConfig = run.config
    rl = cfg.task.rl
    if rl.num_generations < 2:
        raise ConfigError(
            "task.rl.num_generations is 1: grpo compares completions within a group of samples per prompt.\n"
            "  fix: set task.rl.num_generations to 2 or more (4-16 is usual)"
        )
    setup = Setup(run, resume)
    setup.build_optimizer(rl.update_epochs)
    reward = build_reward(rl, cfg.eval)
    copy = reference_copy(run, setup.model)
    G = rl.num_generations
    done = setup.restore()  # last of all before the loop: it sets the RNG states
    train_loss = done.get("train_loss")
    progress = StepProgress(setup.steps)
    for step in range(done["step"], setup.steps):
        prompts = setup.next_prompts()
        rollout = rl_common.sample(setup.model, setup.tokenizer, prompts, rl, G)
        scores = reward([p.messages for p in rollout.prompts], rollout.texts, [p.reference for p in rollout.prompts])
        rewards = torch.tensor(scores, dtype=torch.float32, device=setup.device)
        advantages = group_advantages(rewards, G)
        batch = {k: v.to(setup.device) for k, v in rollout.batch.items()}
        setup.tokens += int(batch["attention_mask"].sum())
        with torch.no_grad():
            old, mask, _, _ = token_logps(setup.model, batch)
            with reference(setup.model, copy) as ref_model:
                ref, _, _, _ = token_logps(ref_model, batch)
        setup.model.train()
        for _ in range(rl.update_epochs):
            new, _, _, entropy = token_logps(setup.model, batch)
            loss, kl = grpo_loss(new, old, ref, advantages, mask, rl.clip_range, rl.kl_coef)
            grad_norm = setup.step(loss)
        setup.log(
            {
                "step": step + 1,
                "loss": float(loss.detach()),
                "reward": float(rewards.mean()),
                "reward_std": float(rewards.view(-1, G).std(1).mean()) if G > 1 else 0.0,
                "kl": float(kl),
                "entropy": float(masked_mean(entropy.detach(), mask)),
                "completion_tokens": float(mask.sum(1).mean()),
                **({"grad_norm": grad_norm} if grad_norm is not None else {}),
            }
        )
        train_loss = float(loss.detach())
        progress.update(
            step + 1, loss=train_loss, lr=setup.scheduler.get_last_lr()[0], tokens_per_s=setup.tokens_per_second
        )
        setup.checkpoint(step + 1, {"train_loss": train_loss})
    progress.close()
    return setup.save(info={"train_loss": train_loss})


def evaluate_run(run: Any, split: str = "test", chats: list[Any] | None = None, out_dir: Any = None) -> dict:
    from tunesmith.recipes.common.policy_eval import evaluate_policy_run

    return evaluate_policy_run(run, split, chats, out_dir)


RECIPE = rl_common.rl_recipe("grpo", train, evaluate_run)


def recipe(cfg: RunConfig) -> Recipe:
    return RECIPE
