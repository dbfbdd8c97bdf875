"""A trained reward model: its one-output sequence-classification model, its scores, and a finished reward run
loaded as a reward function (``load_scorer``) for ppo / grpo rewards and win-rate evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from tunesmith.core.config import RunConfig
from tunesmith.data.records import Message
from tunesmith.models.load import load_pretrained, load_tokenizer
from tunesmith.models.resolve import ResolvedModel
from tunesmith.recipes.common.completions import completion_text, fit, pad_rows, token_ids
from tunesmith.recipes.contract import Batch


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


def scores(model: Any, batch: Batch) -> torch.Tensor:
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0].float()


class Scorer:
    """A trained reward run as a reward function: fn(prompts, replies, references) -> scores."""

    def __init__(self, run_dir: Path) -> None:
        import yaml

        from tunesmith.core.config import validate_config
        from tunesmith.core.errors import ConfigError
        from tunesmith.data.render import ensure_chat_template
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
