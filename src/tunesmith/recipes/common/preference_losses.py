"""Preference losses on sequence log-probabilities: DPO (sigmoid, IPO, hinge), ORPO, SimPO, KTO.

Pure functions of tensors, so they can be checked against a reference implementation on identical inputs.
Each returns per-example losses (the caller sums them and counts examples) and the implicit rewards.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tunesmith.data.render import IGNORE_INDEX


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability of each row's target tokens (labels != IGNORE_INDEX) and their count.

    ``labels`` are aligned with the input ids (the token at position t is predicted from position t-1).
    """
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    logits = logits[:, :-1].float()
    picked = torch.gather(logits, 2, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    per_token = picked - torch.logsumexp(logits, dim=-1)
    return (per_token * mask).sum(-1), mask.sum(-1)


def dpo_losses(
    chosen_logratios: torch.Tensor,
    rejected_logratios: torch.Tensor,
    beta: float,
    loss: str = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO-family losses from log-ratios log pi(y|x) - log pi_ref(y|x); returns (losses, chosen, rejected rewards).

    sigmoid: -log sigmoid(beta * delta) (with cDPO label smoothing); hinge: relu(1 - beta * delta);
    ipo: (delta_avg - 1 / (2 beta))^2 with log-ratios averaged per completion token (needs the lengths).
    """
    delta = chosen_logratios - rejected_logratios
    if loss == "sigmoid":
        losses = -F.logsigmoid(beta * delta) * (1 - label_smoothing) - F.logsigmoid(-beta * delta) * label_smoothing
    elif loss == "hinge":
        losses = torch.relu(1 - beta * delta)
    elif loss == "ipo":
        if chosen_lengths is None or rejected_lengths is None:
            raise ValueError("the ipo loss needs the completion lengths")
        average = chosen_logratios / chosen_lengths.clamp(min=1) - rejected_logratios / rejected_lengths.clamp(min=1)
        losses = (average - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss {loss!r}; expected sigmoid, ipo or hinge")
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, stable on both sides of -log 2."""
    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def orpo_losses(
    chosen_avg_logps: torch.Tensor, rejected_avg_logps: torch.Tensor, chosen_nll: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ORPO (Hong et al., 2024): NLL of the chosen reply minus beta * log sigmoid(log odds ratio).

    ``*_avg_logps`` are log-probabilities averaged per completion token; ``chosen_nll`` is the chosen reply's
    mean per-token negative log-likelihood. Rewards are beta * average log-probability.
    """
    chosen, rejected = chosen_avg_logps.float(), rejected_avg_logps.float()
    log_odds = (chosen - rejected) - (_log1mexp(chosen) - _log1mexp(rejected))
    losses = chosen_nll - beta * F.logsigmoid(log_odds)
    return losses, beta * chosen.detach(), beta * rejected.detach()


def simpo_losses(
    chosen_avg_logps: torch.Tensor,
    rejected_avg_logps: torch.Tensor,
    beta: float,
    gamma: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SimPO (Meng et al., 2024): -log sigmoid(beta * (avg logp chosen - avg logp rejected) - gamma); no reference."""
    logits = beta * (chosen_avg_logps - rejected_avg_logps) - gamma
    losses = -F.logsigmoid(logits) * (1 - label_smoothing) - F.logsigmoid(-logits) * label_smoothing
    return losses, beta * chosen_avg_logps.detach(), beta * rejected_avg_logps.detach()


def kto_losses(
    logratios: torch.Tensor,
    desirable: torch.Tensor,
    kl: torch.Tensor,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """KTO (Ethayarajh et al., 2024) per example: desirable w_d (1 - sigmoid(beta (r - z))), undesirable
    w_u (1 - sigmoid(beta (z - r))), with r the log-ratio and z the (detached, non-negative) KL reference point.

    Returns (losses, rewards = beta * log-ratio).
    """
    z = kl.detach().clamp(min=0)
    good = desirable_weight * (1 - torch.sigmoid(beta * (logratios - z)))
    bad = undesirable_weight * (1 - torch.sigmoid(beta * (z - logratios)))
    return torch.where(desirable, good, bad), beta * logratios.detach()
