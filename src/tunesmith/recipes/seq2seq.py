"""Text-to-text with an encoder-decoder model (T5, BART families): summarisation, translation, rewriting.

The source (with an optional task prefix such as ``summarize: ``) goes to the encoder; the loss is the summed
cross-entropy over the target's tokens (padding -> -100), counted per target token. Predictions are generated
(greedy, or beam search with ``task.seq2seq.num_beams``) and scored with BLEU, chrF and ROUGE-1/2/L against every
reference of a row. Decoder-only text-to-text goes through ``sft``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from tunesmith.core.config import RunConfig
from tunesmith.core.progress import track
from tunesmith.data.formats import RowError
from tunesmith.data.records import Chat, Labeled, Pair, Record
from tunesmith.metrics.generation import generation_metrics
from tunesmith.metrics.text import exact_match
from tunesmith.models.resolve import ResolvedModel
from tunesmith.recipes.contract import Batch, EngineTraining, Recipe, TaskEvaluation, TaskFns

METHOD_REASONS = {
    "prune": "it drops the layers of a causal LM that change its hidden state least, and an encoder-decoder "
    "has two stacks joined by cross-attention"
}
IGNORE_INDEX = -100


@dataclass
class Seq2SeqExample:
    input_ids: list[int]  # the encoder's input (prefix + source)
    labels: list[int]  # the target tokens the decoder learns (ending with EOS)
    truncated: bool

    @property
    def n_targets(self) -> int:
        return len(self.labels)


def convert(record: Record, cfg: RunConfig) -> Pair:
    """The record as source -> target: a pair as it is, a single-turn chat (prompt/completion, Alpaca) as its
    prompt -> reply, a labelled text as text -> label word (``data.label_names``), as T5 casts classification."""
    if isinstance(record, Pair):
        return record
    if isinstance(record, Labeled):
        source = f"{record.text}\n\n{record.text_pair}" if record.text_pair else record.text
        target = cfg.data.label_names.get(record.label, record.label)
        return Pair(source, target, source=record.source, meta={**record.meta, "label": record.label})
    if isinstance(record, Chat):
        prompt = [m for m in record.prompt_messages() if m.role != "system"]
        if len(prompt) != 1 or prompt[0].role != "user":
            raise RowError("a seq2seq row needs one prompt and one reply; this chat has several turns", "multi_turn")
        return Pair(prompt[0].content, record.reference(), source=record.source, meta=record.meta)
    raise RowError(f"the seq2seq task needs source and target texts, got a {type(record).__name__} row", "wrong_type")


def load_model(
    cfg: RunConfig, resolved: ResolvedModel | None = None, quantization: Any | None = None, labels: Any = None
) -> Any:
    from tunesmith.models.load import load_pretrained

    return load_pretrained(cfg.model, auto_class(), resolved, quantization)


def auto_class() -> type:
    from transformers import AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM


def source_text(record: Pair, prefix: str = "") -> str:
    """What the encoder reads: the prefix and the source; reading comprehension rows in T5's QA layout."""
    if record.context:
        return f"{prefix}question: {record.source_text} context: {record.context}"
    return prefix + record.source_text


def references(record: Pair) -> list[str]:
    """Every acceptable target of a row (SciTLDR has several)."""
    return record.references or [record.target]


def _encode(tokenizer: Any, text: str, max_len: int, target: bool = False) -> tuple[list[int], bool]:
    """Token ids with the tokenizer's special tokens (T5 and BART end with EOS), truncated to ``max_len``."""
    key = "text_target" if target else "text"
    ids = tokenizer(**{key: text})["input_ids"]
    if len(ids) <= max_len:
        return ids, False
    return tokenizer(**{key: text}, max_length=max_len, truncation=True)["input_ids"], True


def encode_row(record: Pair, tokenizer: Any, cfg: RunConfig) -> Seq2SeqExample:
    settings = cfg.task.seq2seq
    source, cut_source = _encode(tokenizer, source_text(record, settings.prefix), cfg.training.max_seq_len)
    target, cut_target = _encode(tokenizer, record.target, settings.max_target_len, target=True)
    return Seq2SeqExample(source, target, cut_source or cut_target)


def collate(examples: Sequence[Seq2SeqExample], pad_id: int) -> Batch:
    """Right-pad sources with the pad token and targets with -100 (no loss on padding)."""
    width = max(len(e.input_ids) for e in examples)
    target_width = max(len(e.labels) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), target_width), IGNORE_INDEX, dtype=torch.long)
    for row, example in enumerate(examples):
        input_ids[row, : len(example.input_ids)] = torch.tensor(example.input_ids)
        attention_mask[row, : len(example.input_ids)] = 1
        labels[row, : len(example.labels)] = torch.tensor(example.labels)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def count_targets(batch: Batch) -> int:
    return int((batch["labels"] != IGNORE_INDEX).sum())


def loss(model: Any, batch: Batch, label_smoothing: float = 0.0) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over target tokens (teacher forcing) and their count.

    The model gets ``labels`` and builds its decoder inputs from them (shifted right after the decoder start
    token, -100 replaced by padding), as every transformers encoder-decoder does; the loss is summed here
    because the model's own is a mean over the micro-batch.
    """
    labels = batch["labels"]
    output = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels)
    logits = output.logits[:, -labels.size(1) :]
    summed = F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
        label_smoothing=label_smoothing,
    )
    return summed, count_targets(batch)


def train_fns(tokenizer: Any, cfg: RunConfig, pack_len: int | None = None) -> TaskFns:
    pad_id = tokenizer.pad_token_id
    smoothing = cfg.training.label_smoothing
    return TaskFns(
        lambda examples: collate(examples, pad_id),
        count_targets,
        lambda model, batch: loss(model, batch, smoothing),
    )


# ---------------------------------------------------------------- evaluation (tunesmith.task_evaluation)


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    sources: Sequence[str],
    max_len: int,
    max_new_tokens: int,
    batch_size: int,
    num_beams: int = 1,
    description: str = "predict",
) -> list[str]:
    """Generated targets (greedy, or beam search), batched by similar source lengths."""
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    texts = [""] * len(sources)
    starts = list(range(0, len(order), batch_size))
    for start in track(starts, description):
        indices = order[start : start + batch_size]
        encoded = tokenizer(
            [sources[i] for i in indices], return_tensors="pt", padding=True, truncation=True, max_length=max_len
        ).to(device)
        output = model.generate(
            input_ids=encoded["input_ids"],
            attention_mask=encoded["attention_mask"],
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            do_sample=False,
        )
        for i, text in zip(indices, tokenizer.batch_decode(output, skip_special_tokens=True), strict=True):
            texts[i] = text.strip()
    return texts


def predict_records(
    model: Any, tokenizer: Any, records: Sequence[Pair], cfg: RunConfig, description: str = "predict"
) -> list[dict[str, Any]]:
    settings = cfg.task.seq2seq
    texts = generate(
        model,
        tokenizer,
        [source_text(r, settings.prefix) for r in records],
        cfg.training.max_seq_len,
        cfg.eval.max_new_tokens,
        cfg.eval.batch_size,
        settings.num_beams,
        description,
    )
    return [{"prediction": text} for text in texts]


def score_records(predictions: Sequence[dict[str, Any]], records: Sequence[Pair], cfg: RunConfig) -> dict[str, float]:
    """BLEU, chrF, ROUGE-1/2/L (0-100) and exact match (0-1, against any reference)."""
    texts = [p["prediction"] for p in predictions]
    refs = [references(r) for r in records]
    n = max(len(texts), 1)
    return {
        **generation_metrics(texts, refs),
        "exact_match": sum(max(exact_match(t, ref) for ref in rs) for t, rs in zip(texts, refs, strict=True)) / n,
    }


def describe(record: Pair) -> dict[str, str]:
    """The input and reference shown beside predictions (``predictions.jsonl``, the report's samples)."""
    return {"input": source_text(record), "reference": references(record)[0]}


# fmt: off
RECIPE = Recipe(
    name="seq2seq",
    accepts=(Pair, Chat, Labeled),  # prompt/completion and single-turn chats; labels as words (T5's text-to-text)
    peft_task_type="SEQ_2_SEQ_LM",
    packs=False,  # packing with block masks is a decoder-only technique here; rows are padded per batch
    methods=("full", "freeze", "lora", "qlora", "prefix", "prompt", "ia3", "adapter"), method_reasons=METHOD_REASONS,
    convert=convert, load_model=load_model, auto_class=auto_class, training=EngineTraining(encode_row, train_fns),
    evaluation=TaskEvaluation(
        predict_records, score_records,
        base_is_meaningful=True,  # a pre-trained T5/BART answers zero-shot (e.g. flan-t5 with "summarize: ")
        describe=describe,
    ),
    predicts_targets=True,
)
# fmt: on


def recipe(cfg: RunConfig) -> Recipe:
    return RECIPE
