"""Our preference losses equal TRL's on identical log-probabilities (TRL: a reference implementation no one here
wrote; its loss code runs unchanged on a minimal trainer object whose model returns fixed log-probabilities)."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from tunesmith.recipes.common.preference_losses import dpo_losses, kto_losses, orpo_losses, sequence_logps, simpo_losses

TOL = 1e-6


class FixedLogps(torch.nn.Module):
    """Stands in for a model: returns the given per-token log-probabilities (TRL reads only these for its loss)."""

    def __init__(self, per_token: torch.Tensor) -> None:
        super().__init__()
        self.per_token = per_token

    def forward(self, **kwargs):
        shape = self.per_token.shape
        return SimpleNamespace(
            log_probs=self.per_token,
            entropy=torch.zeros(shape),
            mean_logits=torch.zeros(shape),
            is_top1=torch.zeros(shape, dtype=torch.bool),
        )


def _accelerator():
    from accelerate import Accelerator

    return Accelerator(cpu=True)


def _case(seed: int = 0, pairs: int = 5, width: int = 7):
    """Per-token log-probs of chosen and rejected completions (with padding), and the completion mask."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, width, (2 * pairs,), generator=g)
    mask = (torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)).long()
    per_token = -torch.rand(2 * pairs, width, generator=g, dtype=torch.float64) * 3 * mask
    ref_per_token = -torch.rand(2 * pairs, width, generator=g, dtype=torch.float64) * 3 * mask
    return per_token, ref_per_token, mask


def _trl_dpo(loss_type: str, beta: float, per_token: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor):
    from trl import DPOTrainer

    trainer = DPOTrainer.__new__(DPOTrainer)
    model = FixedLogps(per_token[:, 1:])
    attrs = dict(
        model=model, accelerator=_accelerator(), aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=True,
        f_divergence_type="reverse_kl", loss_types=[loss_type], loss_weights=[1.0], beta=beta, use_weighting=False,
        label_smoothing=0.0, _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0, _tp_size=1,
    )  # fmt: skip
    trainer.__dict__.update(attrs)
    n = per_token.shape[0]
    inputs = {
        "input_ids": torch.ones(n, per_token.shape[1], dtype=torch.long),
        "attention_mask": torch.ones(n, per_token.shape[1], dtype=torch.long),
        "completion_mask": mask,
        "ref_chosen_logps": ref_logps[: n // 2],
        "ref_rejected_logps": ref_logps[n // 2 :],
    }
    out = trainer._compute_loss(model, inputs, return_outputs=False)
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "hinge"])
@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_ipo_hinge_equal_trl(loss_type: str, beta: float) -> None:
    per_token, ref_per_token, mask = _case()
    # TRL's log-prob of token t sits at position t-1 (predicted from the previous position); the first token
    # is a prompt token here, so the completion mask of positions 1.. selects the same completion tokens.
    mask[:, 0] = 0
    per_token = per_token * mask
    ref_per_token = ref_per_token * mask
    logps, ref_logps = per_token.sum(1), ref_per_token.sum(1)
    theirs = _trl_dpo(loss_type, beta, per_token, ref_logps, mask)
    chosen, rejected = logps.chunk(2)
    ref_chosen, ref_rejected = ref_logps.chunk(2)
    lengths = mask.sum(1)
    ours, _, _ = dpo_losses(chosen - ref_chosen, rejected - ref_rejected, beta, loss_type, 0.0, *lengths.chunk(2))
    assert torch.isclose(ours.mean(), theirs.to(ours.dtype), atol=TOL, rtol=0), (ours.mean(), theirs)


def test_orpo_odds_ratio_equals_trl() -> None:
    from trl.experimental.orpo import ORPOTrainer

    trainer = ORPOTrainer.__new__(ORPOTrainer)
    trainer.__dict__.update(beta=0.25, accelerator=_accelerator())
    g = torch.Generator().manual_seed(1)
    chosen = -torch.rand(6, generator=g, dtype=torch.float64) * 2 - 0.01  # average log-probs, some above -log 2
    rejected = -torch.rand(6, generator=g, dtype=torch.float64) * 2 - 0.01
    theirs, *_ = trainer.odds_ratio_loss(chosen, rejected)
    nll = torch.rand(6, generator=g, dtype=torch.float64)
    ours, _, _ = orpo_losses(chosen, rejected, nll, 0.25)
    # TRL returns beta * log sigmoid(log odds) and subtracts its mean from the NLL; ours is per pair NLL - that.
    assert torch.allclose(ours - nll, -theirs.to(ours.dtype), atol=TOL, rtol=0)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_simpo_equals_trl(smoothing: float) -> None:
    from trl.experimental.cpo import CPOTrainer

    trainer = CPOTrainer.__new__(CPOTrainer)
    trainer.__dict__.update(
        beta=2.0, simpo_gamma=0.7, loss_type="simpo", label_smoothing=smoothing, alpha=0.0, accelerator=_accelerator()
    )
    g = torch.Generator().manual_seed(2)
    chosen = -torch.rand(6, generator=g, dtype=torch.float64) * 2
    rejected = -torch.rand(6, generator=g, dtype=torch.float64) * 2
    theirs, _, _ = trainer.cpo_loss(chosen, rejected)
    ours, _, _ = simpo_losses(chosen, rejected, 2.0, 0.7, smoothing)
    assert torch.allclose(ours, theirs.to(ours.dtype), atol=TOL, rtol=0)


@pytest.mark.parametrize("weights", [(1.0, 1.0), (1.0, 1.33)])
def test_kto_equals_trl(weights: tuple[float, float]) -> None:
    from trl import KTOTrainer

    g = torch.Generator().manual_seed(3)
    n, width = 6, 6
    per_token = -torch.rand(n, width - 1, generator=g, dtype=torch.float64) * 2
    ref_logps = -torch.rand(n, generator=g, dtype=torch.float64) * 8
    kl_logps = -torch.rand(n, generator=g, dtype=torch.float64) * 8
    ref_kl_logps = kl_logps - torch.rand(n, generator=g, dtype=torch.float64)  # a positive KL estimate
    label = torch.tensor([True, False, True, True, False, False])
    trainer = KTOTrainer.__new__(KTOTrainer)
    model = FixedLogps(per_token)
    trainer.__dict__.update(
        model=model, accelerator=_accelerator(), aux_loss_enabled=False, precompute_ref_logps=True, calculate_KL=True,
        loss_type="kto", beta=0.1, desirable_weight=weights[0], undesirable_weight=weights[1],
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)}, _total_train_tokens=0, _tp_size=1,
    )  # fmt: skip
    trainer._compute_kl_logps = lambda model, batch: kl_logps
    inputs = {
        "input_ids": torch.ones(n, width, dtype=torch.long),
        "attention_mask": torch.ones(n, width, dtype=torch.long),
        "completion_mask": torch.ones(n, width, dtype=torch.long),
        "label": label,
        "ref_logps": ref_logps,
        "ref_KL_logps": ref_kl_logps,
    }
    out = trainer._compute_loss(model, inputs, return_outputs=False)
    theirs = out[0] if isinstance(out, tuple) else out
    kl = (kl_logps - ref_kl_logps).mean()
    ours, _ = kto_losses(per_token.sum(1) - ref_logps, label, kl, 0.1, *weights)
    # TRL concatenates the desirable then the undesirable losses and averages; a mean does not depend on order.
    assert torch.isclose(ours.mean(), theirs.to(ours.dtype), atol=TOL, rtol=0), (ours.mean(), theirs)


def test_sequence_logps_sum_only_completion_tokens() -> None:
    """Hand-checked: vocabulary of 3, logits chosen so each probability is known."""
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [1 / 3, 1 / 3, 1 / 3]]]))
    labels = torch.tensor([[-100, -100, 1, 2]])  # two prompt tokens, then completion tokens 1 and 2
    total, count = sequence_logps(logits, labels)
    # token 1 is predicted at position 1 (p = 0.8), token 2 at position 2 (p = 0.6); the prompt adds nothing.
    assert count.tolist() == [2]
    assert torch.allclose(total, torch.log(torch.tensor([0.8 * 0.6])), atol=1e-6)
