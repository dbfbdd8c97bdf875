"""Reward model: a one-output sequence-classification head on the chat-rendered prompt + reply, trained on
preference pairs with the Bradley-Terry loss -log sigmoid(r_chosen - r_rejected), evaluated by pairwise accuracy
on held-out pairs. A trained run is a scorer (``common/reward_model.py``) for ppo / grpo rewards and win rates."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from tunesmith.core.config import RunConfig
from tunesmith.data.formats import RowError
from tunesmith.data.records import Preference, Record
from tunesmith.recipes.common.completions import completion_text, fit, pad_rows, token_ids
from tunesmith.recipes.common.reward_model import auto_class, load_model, scores
from tunesmith.recipes.contract import Batch, EngineTraining, Recipe, TaskEvaluation, TaskFns


def convert(record: Record, cfg: RunConfig) -> Preference:
    if not isinstance(record, Preference):
        raise RowError("a reward model trains on prompt/chosen/rejected pairs", "wrong_type")
    if record.chosen.strip() == record.rejected.strip():
        raise RowError("chosen and rejected replies are identical: the pair says nothing", "filtered")
    return record


@dataclass
class RewardPair:
    chosen: list[int]
    rejected: list[int]
    truncated: bool

    @property
    def input_ids(self) -> list[int]:
        return self.chosen

    @property
    def n_targets(self) -> int:
        return 1


def encode_row(record: Preference, tokenizer: Any, cfg: RunConfig) -> RewardPair:
    prompt_text, chosen = completion_text(record.prompt, record.chosen, tokenizer, record.source)
    _, rejected = completion_text(record.prompt, record.rejected, tokenizer, record.source)
    prompt, (c, r), truncated = fit(
        token_ids(prompt_text, tokenizer),
        [token_ids(chosen, tokenizer), token_ids(rejected, tokenizer)],
        cfg.training.max_seq_len,
    )
    return RewardPair(prompt + c, prompt + r, truncated)


def collate(examples: Sequence[RewardPair], pad_id: int) -> Batch:
    """Rows [chosen..., rejected...], right-padded."""
    rows = [(e.chosen, []) for e in examples] + [(e.rejected, []) for e in examples]
    batch = pad_rows(rows, pad_id)
    del batch["labels"]
    return batch


def loss(model: Any, batch: Batch) -> tuple[torch.Tensor, int]:
    """Bradley-Terry: summed -log sigmoid(r_chosen - r_rejected) over pairs, and the number of pairs."""
    chosen, rejected = scores(model, batch).chunk(2)
    return -F.logsigmoid(chosen - rejected).sum(), chosen.shape[0]


def train_fns(tokenizer: Any, cfg: RunConfig, pack_len: int | None = None) -> TaskFns:
    pad_id = tokenizer.pad_token_id
    return TaskFns(lambda examples: collate(examples, pad_id), lambda b: b["input_ids"].shape[0] // 2, loss)


@torch.no_grad()
def predict_records(model: Any, tokenizer: Any, records: Sequence[Preference], cfg: RunConfig, description: str):
    """Scores of the chosen and rejected reply of each pair; the prediction is their margin."""
    from tunesmith.core.progress import track

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    examples = [encode_row(r, tokenizer, cfg) for r in records]
    out = []
    starts = list(range(0, len(examples), cfg.eval.batch_size))
    for start in track(starts, description):
        batch = {k: v.to(device) for k, v in collate(examples[start : start + cfg.eval.batch_size], pad).items()}
        chosen, rejected = scores(model, batch).chunk(2)
        for c, r in zip(chosen.tolist(), rejected.tolist(), strict=True):
            out.append({"prediction": c - r, "chosen": c, "rejected": r})
    return out


def score_records(predictions: Sequence[dict], records: Sequence[Preference], cfg: RunConfig) -> dict[str, float]:
    """Pairwise accuracy (the chosen reply scores higher) and the mean margin."""
    n = max(len(predictions), 1)
    return {
        "pairwise_accuracy": sum(p["prediction"] > 0 for p in predictions) / n,
        "mean_margin": sum(p["prediction"] for p in predictions) / n,
    }


def row_correct(prediction: dict, record: Preference) -> bool:
    return prediction["prediction"] > 0


# fmt: off
RECIPE = Recipe(
    name="reward", accepts=(Preference,), peft_task_type="SEQ_CLS", packs=False, methods=None,
    convert=convert, load_model=load_model, auto_class=auto_class, training=EngineTraining(encode_row, train_fns),
    evaluation=TaskEvaluation(
        predict_records, score_records,
        base_is_meaningful=False,  # a fresh score head ranks pairs at random
        row_correct=row_correct,
    ),
)
# fmt: on


def recipe(cfg: RunConfig) -> Recipe:
    return RECIPE
