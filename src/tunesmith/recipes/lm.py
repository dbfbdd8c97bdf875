"""Continued pre-training of a causal LM on raw domain text ("train on the medical literature first").

Every document is tokenized whole (the tokenizer's BOS where it adds one, EOS appended) and every token carries
loss. In training, each micro-batch's documents are packed into rows of ``training.max_seq_len`` tokens:

- ``task.lm.isolate_documents: true`` (default): each document is cut into pieces of at most ``max_seq_len``
  tokens from its start, and the pieces are packed into rows by the engine's block-diagonal packing (a piece
  attends only to itself, positions restart at 0). Training then sees exactly what evaluation scores.
- ``false``: the documents are concatenated (EOS between them) and the stream is cut into rows of
  ``max_seq_len``: the classic concatenate-and-chunk of GPT-style pre-training, attention across documents.

Without packing (``training.packing: false``, or prefix / prompt tuning) each piece is its own padded row.
``training.batch_size`` counts documents, so a micro-batch holds about (their tokens / max_seq_len) rows.

Evaluation is perplexity on the held-out documents, base vs tuned, with a paired bootstrap over documents:
each document is scored in pieces of ``max_seq_len`` tokens (the first token of a piece has no context and is
not scored), and perplexity is exp(summed loss / scored tokens) over the split.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from tunesmith.core.config import RunConfig
from tunesmith.core.progress import track
from tunesmith.data.formats import RowError
from tunesmith.data.records import Pair, Record, Text
from tunesmith.data.render import IGNORE_INDEX
from tunesmith.engine.packing import model_inputs, pack
from tunesmith.recipes.contract import Batch, EngineTraining, Recipe, TaskEvaluation, TaskFns
from tunesmith.recipes.sft import auto_class, load_model

EVAL_LOGITS_BUDGET = 1 << 27  # logits (floats) per evaluation forward pass: rows x length x vocabulary


@dataclass
class Document:
    input_ids: list[int]
    truncated: bool = False  # documents are never truncated, only cut into pieces

    @property
    def n_targets(self) -> int:
        return len(self.input_ids) - 1


def convert(record: Record, cfg: RunConfig) -> Text:
    """The document's text: a Text row as it is, a source/target row's source text."""
    if isinstance(record, Text):
        return record
    if isinstance(record, Pair):
        return Text(record.source_text, source=record.source, meta=record.meta)
    raise RowError(f"the lm task trains on raw text, got a {type(record).__name__} row")


def encode_document(text: str, tokenizer: Any) -> list[int]:
    """The document's tokens with the tokenizer's own special tokens (BOS where it adds one) and a final EOS."""
    ids = list(tokenizer(text)["input_ids"])
    eos = tokenizer.eos_token_id
    if eos is not None and (not ids or ids[-1] != eos):
        ids.append(eos)
    return ids


def encode_row(record: Text, tokenizer: Any, cfg: RunConfig) -> Document:
    return Document(encode_document(record.text, tokenizer))


def pieces(ids: Sequence[int], length: int) -> list[list[int]]:
    """A document cut into consecutive pieces of at most ``length`` tokens (a 1-token tail has no target)."""
    cut = [list(ids[start : start + length]) for start in range(0, len(ids), length)]
    return [p for p in cut if len(p) > 1]


def collate_isolated(documents: Sequence[Document], pad_id: int, row_len: int) -> Batch:
    """Pieces packed into rows with a block-diagonal mask: no piece sees another (``engine.packing.pack``)."""
    cut = [p for d in documents for p in pieces(d.input_ids, row_len)]
    return pack([(p, p) for p in cut], row_len, pad_id)


def collate_stream(documents: Sequence[Document], pad_id: int, row_len: int) -> Batch:
    """Concatenate-and-chunk: the documents as one stream (each ends with EOS) cut into rows of ``row_len``."""
    stream = [t for d in documents for t in d.input_ids]
    rows = [stream[start : start + row_len] for start in range(0, len(stream), row_len)]
    return collate_padded(rows, pad_id)


def collate_pieces(documents: Sequence[Document], pad_id: int, row_len: int) -> Batch:
    """Unpacked: each piece of each document is its own right-padded row."""
    return collate_padded([p for d in documents for p in pieces(d.input_ids, row_len)], pad_id)


def collate_padded(rows: Sequence[Sequence[int]], pad_id: int) -> Batch:
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        labels[i, : len(row)] = input_ids[i, : len(row)]
        attention_mask[i, : len(row)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def count_targets(batch: Batch) -> int:
    """Tokens predicted from a previous token of their own row (labels shift left by one)."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def loss(model: Any, batch: Batch, label_smoothing: float = 0.0) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over every token of every row, and the count."""
    from tunesmith.engine.lm_loss import causal_lm_loss

    return causal_lm_loss(model, model_inputs(model, batch), batch["labels"], label_smoothing)


def train_fns(tokenizer: Any, cfg: RunConfig, pack_len: int | None = None) -> TaskFns:
    pad_id = tokenizer.pad_token_id
    row_len = pack_len or cfg.training.max_seq_len
    if not pack_len:
        collate = collate_pieces
    elif cfg.task.lm.isolate_documents:
        collate = collate_isolated
    else:
        collate = collate_stream
    loss_fn = partial(loss, label_smoothing=cfg.training.label_smoothing)
    return TaskFns(lambda documents: collate(documents, pad_id, row_len), count_targets, loss_fn)


# ---------------------------------------------------------------- evaluation (tunesmith.task_evaluation)


@torch.no_grad()
def document_losses(
    model: Any, tokenizer: Any, texts: Sequence[str], row_len: int, batch_size: int, description: str = "score"
) -> list[tuple[float, int]]:
    """(summed next-token loss, scored tokens) of each document, scored in pieces of ``row_len`` tokens."""
    model.eval()
    device = next(model.parameters()).device
    vocab = model.get_output_embeddings().weight.shape[0]
    rows_per_pass = max(1, min(batch_size, EVAL_LOGITS_BUDGET // (row_len * vocab)))
    owner, rows = [], []
    for doc, text in enumerate(texts):
        for piece in pieces(encode_document(text, tokenizer), row_len):
            owner.append(doc)
            rows.append(piece)
    totals = [(0.0, 0)] * len(texts)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # similar lengths pad less
    starts = list(range(0, len(order), rows_per_pass))
    for start in track(starts, description):
        indices = order[start : start + rows_per_pass]
        batch = collate_padded([rows[i] for i in indices], tokenizer.pad_token_id)
        logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
        logits = logits.logits[:, -batch["labels"].size(1) :]  # prompt tuning prepends its virtual tokens
        labels = batch["labels"].to(device)
        for row, i in enumerate(indices):
            targets = labels[row, 1:]
            summed = F.cross_entropy(logits[row, :-1].float(), targets, ignore_index=IGNORE_INDEX, reduction="sum")
            previous_loss, previous_count = totals[owner[i]]
            totals[owner[i]] = (previous_loss + float(summed), previous_count + int((targets != IGNORE_INDEX).sum()))
    return totals


def predict_records(
    model: Any, tokenizer: Any, records: Sequence[Text], cfg: RunConfig, description: str = "predict"
) -> list[dict[str, Any]]:
    """Per document: summed loss (nats), scored tokens and the document's own perplexity."""
    scored = document_losses(
        model, tokenizer, [r.text for r in records], cfg.training.max_seq_len, cfg.eval.batch_size, description
    )
    rows = []
    for total, count in scored:
        perplexity = math.exp(total / count) if count else None
        display = f"perplexity {perplexity:.2f}" if perplexity is not None else "no scored tokens"
        rows.append({"loss": total, "tokens": count, "perplexity": perplexity, "display": display})
    return rows


def score_records(predictions: Sequence[dict[str, Any]], records: Sequence[Text], cfg: RunConfig) -> dict[str, float]:
    """Perplexity over all scored tokens of the documents (a token-weighted mean loss, exponentiated)."""
    total = sum(p["loss"] for p in predictions)
    count = sum(p["tokens"] for p in predictions)
    mean = total / count if count else float("nan")
    return {"perplexity": math.exp(mean), "loss": mean}


def describe(record: Text) -> dict[str, str]:
    """The start of the document, shown beside its scores."""
    text = " ".join(record.text.split())
    return {"input": text if len(text) <= 300 else text[:297] + "..."}


# fmt: off
RECIPE = Recipe(
    name="lm",
    accepts=(Text, Pair),  # Pair: its source text is the document (e.g. SciTLDR's abstracts)
    peft_task_type="CAUSAL_LM", packs=True, methods=None,
    convert=convert, load_model=load_model, auto_class=auto_class, training=EngineTraining(encode_row, train_fns),
    evaluation=TaskEvaluation(predict_records, score_records, base_is_meaningful=True, describe=describe),
    hands_on_model=True,
)
# fmt: on


def recipe(cfg: RunConfig) -> Recipe:
    return RECIPE
