"""Reward model: a one-output sequence-classification head on the chat-rendered prompt + reply, trained on
preference pairs with the Bradley-Terry loss -log sigmoid(r_chosen - r_rejected), evaluated by pairwise accuracy
on held-out pairs. A trained run is a scorer (``load_scorer``) for ppo / grpo rewards and win-rate evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from tunesmith.config import RunConfig
from tunesmith.data.formats import RowError
from tunesmith.data.records import Message, Preference, Record
from tunesmith.engine.loop import Batch, TaskFns
from tunesmith.models.load import load_pretrained, load_tokenizer
from tunesmith.models.resolve import ResolvedModel
from tunesmith.recipes.completions import completion_text, fit, pad_rows, token_ids

NAME = "reward"
ACCEPTS = (Preference,)
PEFT_TASK_TYPE = "SEQ_CLS"
PACKS = False
METHODS = None
BASE_IS_MEANINGFUL = False  # a fresh score head ranks pairs at random


def convert(record: Record, cfg: RunConfig) -> Preference:
    if not isinstance(record, Preference):
        raise RowError("a reward model trains on prompt/chosen/rejected pairs", "wrong_type")
    if record.chosen.strip() == record.rejected.strip():
        raise RowError("chosen and rejected replies are identical: the pair says nothing", "filtered")
    return record


def load_model(
    cfg: RunConfig, resolved: ResolvedModel | None = None, quantization: Any | None = None, labels: Any = None
) -> Any:
    from transformers import AutoModelForSequenceClassification

    model = load_pretrained(cfg.model, AutoModelForSequenceClassification, resolved, quantization, num_labels=1)
    model.config.pad_token_id = load_tokenizer(cfg.model, resolved).pad_token_id  # the score is read before padding
    return model


def auto_class() -> type:
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification


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


def scores(model: Any, batch: Batch) -> torch.Tensor:
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0].float()


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
    from tunesmith.engine.progress import track

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


class Scorer:
    """A trained reward run as a reward function: fn(prompts, replies, references) -> scores."""

    def __init__(self, run_dir: Path) -> None:
        import yaml

        from tunesmith.config import validate_config
        from tunesmith.data.render import ensure_chat_template
        from tunesmith.errors import ConfigError
        from tunesmith.models.adapt import load_trained, needs_base

        config_path, model_dir = Path(run_dir, "config.yaml"), Path(run_dir, "model")
        cfg = validate_config(yaml.safe_load(config_path.read_text(encoding="utf-8")), source=str(config_path))
        if cfg.task.name != "reward" or not model_dir.is_dir():
            raise ConfigError(f"{run_dir}: not a trained reward model (a finished run with task: reward)")
        base = load_model(cfg) if needs_base(cfg.method) else None
        self.model = load_trained(cfg.method, model_dir, base, auto_class()).eval()
        self.tokenizer = load_tokenizer(cfg.model, ResolvedModel(str(model_dir), str(model_dir.resolve()), "local"))
        ensure_chat_template(self.tokenizer)
        self.max_len, self.batch_size = cfg.training.max_seq_len, cfg.eval.batch_size
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device)

    @torch.no_grad()
    def __call__(
        self, prompts: Sequence[list[Message]], replies: Sequence[str], references: Sequence[str | None] = ()
    ) -> list[float]:
        rows = []
        for prompt, reply in zip(prompts, replies, strict=True):
            before, completion = completion_text(prompt, reply, self.tokenizer)
            p, (c,), _ = fit(token_ids(before, self.tokenizer), [token_ids(completion, self.tokenizer)], self.max_len)
            rows.append((p + c, []))
        out: list[float] = []
        for start in range(0, len(rows), self.batch_size):
            batch = pad_rows(rows[start : start + self.batch_size], self.tokenizer.pad_token_id)
            batch = {k: v.to(self.device) for k, v in batch.items() if k != "labels"}
            out += scores(self.model, batch).tolist()
        return out


def load_scorer(run_dir: Path) -> Scorer:
    return Scorer(run_dir)
