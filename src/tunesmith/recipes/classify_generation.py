"""Classification as generation (``task.classify.head: generation``): a chat model answers with the label word.

Training is sft on the label word (the row becomes a user -> assistant chat, loss on the answer and its end of
turn). Predictions are constrained to the label set: for each label, the log-likelihood of its whole answer (every
token of the word and the end-of-turn token, exactly the tokens trained on) after the prompt; the most likely
label wins and a softmax over the labels' log-likelihoods gives probabilities. No free text is parsed, so a label
that is a prefix of another, or a multi-token label, is scored correctly, and an untrained chat model's zero-shot
answer is a meaningful baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from tunesmith.core.config import RunConfig
from tunesmith.core.progress import track
from tunesmith.data.convert import to_chat
from tunesmith.data.records import Chat, Labeled, Message
from tunesmith.data.render import IGNORE_INDEX, Encoded, encode_chat
from tunesmith.engine.lm_loss import capture_final_hidden, fast_path_possible, unwrap
from tunesmith.recipes import sft
from tunesmith.recipes.common.labels import (
    LABEL_ENSEMBLE,
    baselines,
    convert,
    details,
    prediction,
    row_correct,
    score_records,
)
from tunesmith.recipes.contract import EngineTraining, Recipe, TaskEvaluation, TaskFns


def as_chat(record: Labeled, cfg: RunConfig, answer: str | None = None) -> Chat:
    """The row as the chat the model is trained on: the prompt, then ``answer`` (default: its label)."""
    template = cfg.task.classify.prompt
    if template is not None:
        text = template.format(text=record.text, text_pair=record.text_pair or "")
        record = Labeled(text, record.label, None, record.source, record.meta)
    chat = to_chat(record, None, cfg.task.system_prompt)
    messages = [*chat.messages[:-1], Message("assistant", record.label if answer is None else answer)]
    return Chat(messages, source=record.source, meta=chat.meta)


def encode_row(record: Labeled, tokenizer: Any, cfg: RunConfig) -> Encoded:
    return sft.encode(as_chat(record, cfg), tokenizer, "assistant", cfg.training.max_seq_len)


def train_fns(tokenizer: Any, cfg: RunConfig, pack_len: int | None = None) -> TaskFns:
    return sft.train_fns(tokenizer, cfg, pack_len)


@torch.no_grad()
def answer_log_likelihoods(model: Any, batch: list[Encoded], pad_id: int) -> list[float]:
    """Summed log-probability of each example's target tokens (labels != IGNORE_INDEX) given what precedes them."""
    collated = sft.collate(batch, pad_id)
    device = next(model.parameters()).device
    inputs = {k: collated[k].to(device) for k in ("input_ids", "attention_mask")}
    labels = collated["labels"].to(device)
    targets, keep = labels[:, 1:], labels[:, 1:] != IGNORE_INDEX
    rows = torch.arange(labels.size(0), device=device)[:, None].expand_as(targets)[keep]
    hidden = None
    if fast_path_possible(model):  # the output head only at answer positions (see engine.lm_loss)
        with capture_final_hidden(model, labels.size(1)) as captured:
            output = model(**inputs)
        hidden = captured.get("hidden")
    else:
        output = model(**inputs)
    if hidden is not None:
        logits = unwrap(model).get_output_embeddings()(hidden[:, :-1][keep]).float()
    else:
        logits = output.logits[:, -labels.size(1) :][:, :-1][keep].float()  # prompt tuning prepends virtual tokens
    token_lp = logits.log_softmax(-1).gather(1, targets[keep][:, None]).squeeze(1)
    sums = torch.zeros(labels.size(0), device=device).index_add_(0, rows, token_lp)
    return sums.tolist()


def label_probabilities(
    model: Any, tokenizer: Any, records: Sequence[Labeled], labels: list[str], cfg: RunConfig, description: str
) -> list[list[float]]:
    """For each record, the softmax over labels of each label answer's log-likelihood."""
    model.eval()
    encoded = [encode_chat(as_chat(r, cfg, label), tokenizer) for r in records for label in labels]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))  # similar lengths pad less
    scores = [0.0] * len(encoded)
    size = cfg.eval.batch_size
    for start in track(list(range(0, len(order), size)), description):
        rows = order[start : start + size]
        for i, value in zip(
            rows, answer_log_likelihoods(model, [encoded[i] for i in rows], tokenizer.pad_token_id), strict=True
        ):
            scores[i] = value
    k = len(labels)
    table = torch.tensor(scores).view(len(records), k)
    return table.softmax(-1).tolist()


def predict_records(
    model: Any, tokenizer: Any, records: Sequence[Labeled], cfg: RunConfig, description: str
) -> list[dict[str, Any]]:
    labels = cfg.data.labels or []
    probs = label_probabilities(model, tokenizer, records, labels, cfg, description)
    return [prediction(labels, p) for p in probs]


def predict_texts(model: Any, tokenizer: Any, texts: Sequence[str], cfg: RunConfig) -> list[dict[str, Any]]:
    """Predictions for raw input texts (``tunesmith predict``, ``/v1/classify``)."""
    return predict_records(model, tokenizer, [Labeled(text, "") for text in texts], cfg, "predict")


# fmt: off
RECIPE = Recipe(
    name="classify", accepts=(Labeled,), peft_task_type="CAUSAL_LM", packs=True, methods=None,
    convert=convert, load_model=sft.load_model, auto_class=sft.auto_class,
    training=EngineTraining(encode_row, train_fns),
    evaluation=TaskEvaluation(
        predict_records, score_records,  # label-constrained: each label's answer likelihood, no free text parsed
        base_is_meaningful=True,  # a chat model can answer zero-shot
        row_correct=row_correct, baselines=baselines, details=details, ensemble=LABEL_ENSEMBLE,
    ),
    predict_texts=predict_texts, annotator="classifier",
    chat_replies=sft.predict,  # still a chat model: it can be served and chatted with
)
# fmt: on
