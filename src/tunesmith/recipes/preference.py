"""Preference tuning of a causal LM: DPO (sigmoid / IPO / hinge), ORPO, SimPO on chosen-vs-rejected pairs, and
KTO on single replies judged desirable or not.

A pair is one prompt with two completions; sequence log-probabilities sum only completion tokens. The reference
model of DPO and KTO is the base model: with an adapter method it is the same model with its adapters disabled
(one copy of the base weights in memory), with full or freeze tuning a frozen copy loaded on first use.
ORPO and SimPO need no reference.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from tunesmith.core.config import RunConfig
from tunesmith.data.formats import RowError
from tunesmith.data.records import Feedback, Preference, Record
from tunesmith.recipes.common.pairs import PreferenceExample, collate, encode, is_adapter_model, logps, unwrap
from tunesmith.recipes.common.preference_losses import dpo_losses, kto_losses, orpo_losses, simpo_losses
from tunesmith.recipes.contract import Batch, EngineTraining, OwnEvaluation, Recipe, TaskFns
from tunesmith.recipes.sft import auto_class, load_model
from tunesmith.recipes.sft import predict as chat_replies

REFERENCE_FREE = ("orpo", "simpo")


def convert(record: Record, cfg: RunConfig) -> Record:
    """Pairs for dpo/orpo/simpo; single judged replies for kto (a pair gives one desirable and one undesirable)."""
    if cfg.task.name == "kto":
        if isinstance(record, Feedback):
            return record
        raise RowError("kto trains on prompt/completion/label rows; this row is a chosen/rejected pair", "wrong_type")
    if isinstance(record, Preference):
        if record.chosen.strip() == record.rejected.strip():
            raise RowError("chosen and rejected replies are identical: the pair says nothing", "filtered")
        return record
    raise RowError(
        f"{cfg.task.name} trains on prompt/chosen/rejected pairs; this row is a single judged reply (use task kto)",
        "wrong_type",
    )


def encode_row(record: Preference | Feedback, tokenizer: Any, cfg: RunConfig) -> PreferenceExample:
    return encode(record, tokenizer, cfg.training.max_seq_len)


def count_targets(batch: Batch) -> int:
    """Pairs (or judged replies): the loss is a mean over examples."""
    rows = batch["input_ids"].shape[0]
    return rows if "desirable" in batch else rows // 2


def train_fns(tokenizer: Any, cfg: RunConfig, pack_len: int | None = None) -> TaskFns:
    pad_id = tokenizer.pad_token_id
    return TaskFns(lambda examples: collate(examples, pad_id), count_targets, PreferenceLoss(cfg))


class Reference:
    """Log-probabilities under the reference model: the adapter model with adapters disabled, else a frozen copy
    of the base model (loaded on first use)."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.copy: Any = None

    @torch.no_grad()
    def logps(self, model: Any, batch: Batch, prefix: str = "") -> torch.Tensor:
        inner = unwrap(model)
        if is_adapter_model(inner):
            with inner.disable_adapter():
                return logps(inner, batch, prefix)[0]
        if self.copy is None:
            device = next(inner.parameters()).device
            self.copy = load_model(self.cfg).to(device).eval().requires_grad_(False)
        return logps(self.copy, batch, prefix)[0]


class PreferenceLoss:
    """The engine's loss: (summed per-example loss, number of examples); the last batch's rewards are kept."""

    def __init__(self, cfg: RunConfig) -> None:
        self.task = cfg.task.name
        self.settings = cfg.task.preference
        self.beta = self.settings.beta_for(self.task)
        self.reference = Reference(cfg)

    def __call__(self, model: Any, batch: Batch) -> tuple[torch.Tensor, int]:
        losses, _, _ = self.losses(model, batch)
        return losses.sum(), losses.shape[0]

    def losses(self, model: Any, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-example losses and implicit rewards (chosen, rejected; for kto: rewards and an empty tensor)."""
        s = self.settings
        total, count, _ = logps(model, batch)
        if self.task == "kto":
            ref = self.reference.logps(model, batch)
            with torch.no_grad():
                kl = (logps(model, batch, "kl_")[0] - self.reference.logps(model, batch, "kl_")).mean()
            losses, rewards = kto_losses(
                total - ref, batch["desirable"], kl, self.beta, s.desirable_weight, s.undesirable_weight
            )
            return losses, rewards, rewards.new_zeros(0)
        chosen, rejected = total.chunk(2)
        chosen_n, rejected_n = count.chunk(2)
        if self.task == "orpo":
            nll = -chosen / chosen_n.clamp(min=1)
            return orpo_losses(chosen / chosen_n.clamp(min=1), rejected / rejected_n.clamp(min=1), nll, self.beta)
        if self.task == "simpo":
            chosen_avg, rejected_avg = chosen / chosen_n.clamp(min=1), rejected / rejected_n.clamp(min=1)
            return simpo_losses(chosen_avg, rejected_avg, self.beta, s.gamma, s.label_smoothing)
        ref_chosen, ref_rejected = self.reference.logps(model, batch).chunk(2)
        return dpo_losses(
            chosen - ref_chosen,
            rejected - ref_rejected,
            self.beta,
            s.loss,
            s.label_smoothing,
            chosen_n,
            rejected_n,
        )


def evaluate_run(run: Any, split: str = "test", chats: list[Any] | None = None, out_dir: Any = None) -> dict:
    """Reward accuracy and margins (test and validation), KL from the reference and win rate: see
    ``tunesmith.recipes.policy_eval``."""
    from tunesmith.recipes.common.policy_eval import evaluate_preference_run

    return evaluate_preference_run(run, split, chats, out_dir)


# fmt: off
RECIPE = Recipe(
    name="preference", accepts=(Preference, Feedback), peft_task_type="CAUSAL_LM", packs=False,
    # Prefix / prompt tuning shift the logits by their virtual tokens and the bottleneck adapter cannot be switched
    # off to recover the reference model; prune changes the model the reference would be.
    methods=("full", "freeze", "lora", "qlora", "ia3"),
    convert=convert, load_model=load_model, auto_class=auto_class, training=EngineTraining(encode_row, train_fns),
    evaluation=OwnEvaluation(evaluate_run),
    chat_replies=chat_replies,  # the tuned model is a chat policy
)
# fmt: on


def recipe(cfg: RunConfig) -> Recipe:
    """One module for dpo, orpo, simpo and kto: the task name picks the loss."""
    return replace(RECIPE, name=cfg.task.name)
