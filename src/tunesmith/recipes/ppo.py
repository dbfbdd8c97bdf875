"""PPO-based RLHF (Ziegler et al., 2019; Ouyang et al., 2022): the policy (an adapter on the base model) with a
value head on its last hidden state, a frozen reference (the same model with adapters disabled), and a reward
(a reward-model run or Python callables, ``task.rl.reward``).

Each step samples completions, scores them, gives every completion token the reward -kl_coef * (log pi - log
pi_ref) plus the score on its last token, computes advantages by GAE, and takes ``update_epochs`` clipped
policy / clipped value updates. The KL coefficient adapts towards ``target_kl`` (the adaptive controller of
Ziegler et al.). The value head is saved beside the model as ``value_head.safetensors``.
"""

from __future__ import annotations

from typing import Any

import torch

from tunesmith.core.config import RlConfig, RunConfig
from tunesmith.recipes.common import rl as rl_common
from tunesmith.recipes.common.reward_fns import build_reward
from tunesmith.recipes.common.rl import Setup, masked_mean, reference, reference_copy, token_logps
from tunesmith.recipes.contract import Recipe


class AdaptiveKL:
    """kl_coef *= 1 + clip(KL / target - 1, -0.2, 0.2) * samples / horizon (Ziegler et al., 2019)."""

    def __init__(self, rl: RlConfig) -> None:
        self.value, self.rl = rl.kl_coef, rl

    def update(self, kl: float, samples: int) -> None:
        if self.rl.adaptive_kl:
            error = min(max(kl / self.rl.target_kl - 1, -0.2), 0.2)
            self.value *= 1 + error * samples / self.rl.kl_horizon


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """Generalised advantage estimates over completion positions (mask = 1), zero elsewhere."""
    advantages = torch.zeros_like(rewards)
    last = torch.zeros(rewards.shape[0], device=rewards.device)
    next_value = torch.zeros_like(last)
    for t in reversed(range(rewards.shape[1])):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = torch.where(m > 0, delta + gamma * lam * last, last)
        next_value = torch.where(m > 0, values[:, t], next_value)
        advantages[:, t] = last * m
    return advantages


def whiten(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    return (values - mean) * torch.rsqrt(var + 1e-8) * mask


def token_rewards(score: torch.Tensor, logratio: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """-kl_coef * (log pi - log pi_ref) on every completion token, plus the score on the last one."""
    rewards = -kl_coef * logratio * mask
    last = (mask.cumsum(1) == mask.sum(1, keepdim=True)) & (mask > 0)
    return rewards + last.float() * score.unsqueeze(1)


def ppo_losses(
    new: torch.Tensor,
    old: torch.Tensor,
    advantages: torch.Tensor,
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    rl: RlConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(clipped policy loss, clipped value loss), token means over the completion."""
    ratio = torch.exp(new - old)
    policy = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - rl.clip_range, 1 + rl.clip_range))
    clipped = old_values + (values - old_values).clamp(-rl.value_clip_range, rl.value_clip_range)
    value = 0.5 * torch.max((values - returns) ** 2, (clipped - returns) ** 2)
    return masked_mean(policy, mask), masked_mean(value, mask)


def train(run: Any, resume: bool = False) -> Any:
    """The PPO loop; writes metrics.jsonl (reward, KL, KL coefficient, entropy, value loss per step), checkpoints
    every ``training.save_every`` steps (``resume`` continues from the newest) and the model and value head."""
    from tunesmith.core.progress import StepProgress

    cfg: RunConfig = run.config
    rl = cfg.task.rl
    setup = Setup(run, resume)
    hidden = rl_common.unwrap(setup.model).config.get_text_config().hidden_size
    value_head = torch.nn.Linear(hidden, 1)
    torch.nn.init.zeros_(value_head.weight)
    torch.nn.init.zeros_(value_head.bias)
    setup.build_optimizer(rl.update_epochs, [value_head])
    reward = build_reward(rl, cfg.eval)
    copy = reference_copy(run, setup.model)
    kl_ctl = AdaptiveKL(rl)
    done = setup.restore()  # last of all before the loop: it sets the RNG states
    kl_ctl.value = done.get("kl_coef", kl_ctl.value)
    train_loss = done.get("train_loss")
    progress = StepProgress(setup.steps)
    for step in range(done["step"], setup.steps):
        rollout = rl_common.sample(setup.model, setup.tokenizer, setup.next_prompts(), rl, rl.num_generations)
        scores = reward([p.messages for p in rollout.prompts], rollout.texts, [p.reference for p in rollout.prompts])
        score = torch.tensor(scores, dtype=torch.float32, device=setup.device)
        batch = {k: v.to(setup.device) for k, v in rollout.batch.items()}
        setup.tokens += int(batch["attention_mask"].sum())
        with torch.no_grad():
            old, mask, states, _ = token_logps(setup.model, batch, hidden=True)
            old_values = value_head(states.float()).squeeze(-1) * mask
            with reference(setup.model, copy) as ref_model:
                ref, _, _, _ = token_logps(ref_model, batch)
            logratio = (old - ref) * mask
            rewards = token_rewards(score, logratio, mask, kl_ctl.value)
            advantages = gae(rewards, old_values, mask, rl.gamma, rl.lam)
            returns = advantages + old_values
            advantages = whiten(advantages, mask)
        setup.model.train()
        for _ in range(rl.update_epochs):
            new, _, states, entropy = token_logps(setup.model, batch, hidden=True)
            values = value_head(states.float()).squeeze(-1)
            policy_loss, value_loss = ppo_losses(new, old, advantages, values, old_values, returns, mask, rl)
            grad_norm = setup.step(policy_loss + rl.value_coef * value_loss)
        kl = float(logratio.sum(1).mean())
        setup.log(
            {
                "step": step + 1,
                "loss": float((policy_loss + rl.value_coef * value_loss).detach()),
                "reward": float(score.mean()),
                "kl": kl,
                "kl_coef": kl_ctl.value,
                "entropy": float(masked_mean(entropy.detach(), mask)),
                "policy_loss": float(policy_loss.detach()),
                "value_loss": float(value_loss.detach()),
                "completion_tokens": float(mask.sum(1).mean()),
                **({"grad_norm": grad_norm} if grad_norm is not None else {}),
            }
        )
        kl_ctl.update(kl, len(rollout.texts))
        train_loss = float(policy_loss.detach())
        progress.update(
            step + 1, loss=train_loss, lr=setup.scheduler.get_last_lr()[0], tokens_per_s=setup.tokens_per_second
        )
        setup.checkpoint(step + 1, {"kl_coef": kl_ctl.value, "train_loss": train_loss})  # the value head is in it
    progress.close()
    head = {"weight": value_head.weight, "bias": value_head.bias}
    return setup.save({"value_head.safetensors": head}, info={"train_loss": train_loss})


def evaluate_run(run: Any, split: str = "test", chats: list[Any] | None = None, out_dir: Any = None) -> dict:
    from tunesmith.recipes.common.policy_eval import evaluate_policy_run

    return evaluate_policy_run(run, split, chats, out_dir)


RECIPE = rl_common.rl_recipe("ppo", train, evaluate_run)


def recipe(cfg: RunConfig) -> Recipe:
    return RECIPE
