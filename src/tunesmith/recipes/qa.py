"""Extractive question answering (SQuAD format): a span head predicts where the answer starts and ends.

A context longer than ``training.max_seq_len`` is split into overlapping windows (``task.qa.doc_stride`` tokens
shared by neighbours), each holding the question and a slice of the context, as in the SQuAD recipes of BERT and
transformers. A window whose slice does not contain the answer is trained to point at its first token (``[CLS]``,
"no answer here"). To predict, the ``n_best`` start and end logits of every window are paired into spans of at
most ``max_answer_len`` tokens inside the context, and the span with the highest start + end logit over all windows
is mapped back to context characters with the tokenizer's offset mapping.

Generative QA (the model writes the answer) is ``sft`` on the same SQuAD rows: they load as question/context
pairs that ``sft`` turns into a chat.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from tunesmith.core.config import RunConfig
from tunesmith.core.errors import ConfigError
from tunesmith.core.progress import track
from tunesmith.data.formats import RowError
from tunesmith.data.records import Pair, Record
from tunesmith.metrics.text import exact_match, normalize, token_f1
from tunesmith.models.resolve import ResolvedModel
from tunesmith.recipes.contract import ENCODER_HEAD_METHODS, Batch, EngineTraining, Recipe, TaskEvaluation, TaskFns


@dataclass
class Window:
    input_ids: list[int]
    token_type_ids: list[int] | None
    start: int  # token index of the answer's first token, or of the no-answer token (0)
    end: int


@dataclass
class QAExample:
    """One question over its context: one window per slice of a long context (each is a training target)."""

    windows: list[Window]
    truncated: bool  # the question was cut to task.qa.max_question_len tokens

    @property
    def input_ids(self) -> list[int]:  # the first window stands for the row in token statistics
        return self.windows[0].input_ids

    @property
    def n_targets(self) -> int:
        return len(self.windows)


# ------------------------------------------------------------------ records


def convert(record: Record, cfg: RunConfig) -> Pair:
    """The question with its context and where its answer starts in the context (``meta.answer_start``)."""
    if not isinstance(record, Pair) or not record.context:
        raise RowError(
            "the qa task needs a context to extract the answer from (SQuAD format: context, question, answers)",
            "missing_field",
        )
    answers = record.references or [record.target]
    starts = record.meta.get("answer_starts") or []
    for i, answer in enumerate(answers):
        given = starts[i] if i < len(starts) and isinstance(starts[i], int) else None
        # The file's offset is kept when it still points at the answer (cleaning can shift it); else its first
        # occurrence.
        if given is not None and record.context[given : given + len(answer)] == answer:
            start = given
        else:
            start = record.context.find(answer)
        if start >= 0:
            record.target = answer
            record.meta = {**record.meta, "answer_start": start}
            return record
    raise RowError(f"answer {answers[0][:60]!r} does not occur in field 'context'", "answer_not_in_context")


# ------------------------------------------------------------------ model


def load_model(
    cfg: RunConfig, resolved: ResolvedModel | None = None, quantization: Any | None = None, labels: Any = None
) -> Any:
    from transformers import AutoModelForQuestionAnswering

    from tunesmith.models.load import load_pretrained
    from tunesmith.recipes.tag import check_positions

    model = load_pretrained(cfg.model, AutoModelForQuestionAnswering, resolved, quantization)
    check_positions(model, cfg)
    return model


def auto_class() -> type:
    from transformers import AutoModelForQuestionAnswering

    return AutoModelForQuestionAnswering


# ------------------------------------------------------------------ windows


def _question(tokenizer: Any, question: str, max_tokens: int) -> tuple[str, bool]:
    """The question cut to ``max_tokens`` tokens (at a token boundary of the text), and whether it was cut."""
    question = question.lstrip()  # SQuAD has questions with leading spaces that only waste window room
    encoded = tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)
    if len(encoded["input_ids"]) <= max_tokens:
        return question, False
    return question[: encoded["offset_mapping"][max_tokens - 1][1]], True


def windows(tokenizer: Any, question: str, context: str, cfg: RunConfig) -> tuple[Any, bool]:
    """The tokenizer's overlapping windows of (question, context slice), with offsets and sequence ids."""
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(
            f"the qa task needs a fast tokenizer (offset mappings locate the answer); {type(tokenizer).__name__} "
            "is not one.\n  fix: use a model that ships tokenizer.json"
        )
    question, cut = _question(tokenizer, question, cfg.task.qa.max_question_len)
    encoded = tokenizer(
        question,
        context,
        truncation="only_second",
        max_length=cfg.training.max_seq_len,
        stride=cfg.task.qa.doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    return encoded, cut


def _context_range(sequence_ids: Sequence[int | None]) -> tuple[int, int]:
    first = sequence_ids.index(1)
    last = len(sequence_ids) - 1 - list(reversed(sequence_ids)).index(1)
    return first, last


def answer_positions(
    offsets: Sequence[tuple[int, int]], sequence_ids: Sequence[int | None], start_char: int, end_char: int
) -> tuple[int, int]:
    """Token indices of the first and last answer token in this window, or (0, 0) when the window does not hold
    the whole answer."""
    first, last = _context_range(sequence_ids)
    if offsets[first][0] > start_char or offsets[last][1] < end_char:
        return 0, 0
    start = first
    while start <= last and offsets[start][1] <= start_char:
        start += 1
    end = last
    while end >= first and offsets[end][0] >= end_char:
        end -= 1
    return start, end


def encode_row(record: Pair, tokenizer: Any, cfg: RunConfig) -> QAExample:
    assert record.context is not None
    encoded, cut = windows(tokenizer, record.source_text, record.context, cfg)
    start_char = int(record.meta["answer_start"])
    end_char = start_char + len(record.target)
    out = []
    for i, ids in enumerate(encoded["input_ids"]):
        start, end = answer_positions(encoded["offset_mapping"][i], encoded.sequence_ids(i), start_char, end_char)
        types = encoded["token_type_ids"][i] if "token_type_ids" in encoded else None
        out.append(Window(list(ids), list(types) if types is not None else None, start, end))
    return QAExample(out, cut)


# ------------------------------------------------------------------ training


def train_fns(tokenizer: Any, cfg: RunConfig, pack_len: int | None = None) -> TaskFns:
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return TaskFns(lambda examples: collate(examples, pad_id), count_targets, loss)


def _pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def collate(examples: Sequence[QAExample], pad_id: int) -> Batch:
    """Every window of every example, right-padded, with its start and end positions."""
    flat = [w for e in examples for w in e.windows]
    input_ids, attention_mask = _pad([w.input_ids for w in flat], pad_id)
    batch = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "start_positions": torch.tensor([w.start for w in flat], dtype=torch.long),
        "end_positions": torch.tensor([w.end for w in flat], dtype=torch.long),
    }
    if all(w.token_type_ids is not None for w in flat):
        batch["token_type_ids"] = _pad([w.token_type_ids or [] for w in flat], 0)[0]
    return batch


def count_targets(batch: Batch) -> int:
    return int(batch["start_positions"].numel())


def span_logits(model: Any, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Start and end logits aligned with ``input_ids`` (prompt tuning's virtual tokens come first: dropped)."""
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
    output = model(**inputs)
    width = batch["input_ids"].shape[1]
    return output.start_logits[:, -width:].float(), output.end_logits[:, -width:].float()


def loss(model: Any, batch: Batch) -> tuple[torch.Tensor, int]:
    """Per window the mean of the start and end cross-entropies (BERT's SQuAD loss), summed; and the windows."""
    start_logits, end_logits = span_logits(model, batch)
    total = F.cross_entropy(start_logits, batch["start_positions"], reduction="sum")
    total = total + F.cross_entropy(end_logits, batch["end_positions"], reduction="sum")
    return total / 2, count_targets(batch)


# ------------------------------------------------------------------ prediction


def best_span(
    start_logits: Sequence[float],
    end_logits: Sequence[float],
    context: tuple[int, int],
    n_best: int,
    max_answer_len: int,
) -> list[tuple[float, int, int]]:
    """Candidate spans ``(score, start, end)`` inside the context tokens ``context`` (first, last), best first."""
    first, last = context
    starts = sorted(range(first, last + 1), key=lambda i: -start_logits[i])[:n_best]
    ends = sorted(range(first, last + 1), key=lambda i: -end_logits[i])[:n_best]
    spans = [(start_logits[s] + end_logits[e], s, e) for s in starts for e in ends if s <= e < s + max_answer_len]
    return sorted(spans, reverse=True)


@torch.no_grad()
def predict_answers(model: Any, tokenizer: Any, records: Sequence[Pair], cfg: RunConfig, description: str) -> list:
    """The best answer span of each question over all windows of its context, with its probability among the
    candidate spans."""
    model.eval()
    device = next(model.parameters()).device
    qa = cfg.task.qa
    flat: list[tuple[int, list[int], list[int] | None, list[tuple[int, int]], tuple[int, int]]] = []
    for index, record in enumerate(records):
        encoded, _ = windows(tokenizer, record.source_text, record.context or "", cfg)
        for i, ids in enumerate(encoded["input_ids"]):
            types = encoded["token_type_ids"][i] if "token_type_ids" in encoded else None
            span = _context_range(encoded.sequence_ids(i))
            flat.append((index, list(ids), types, encoded["offset_mapping"][i], span))
    candidates: dict[int, list[tuple[float, int, int]]] = defaultdict(list)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    starts = list(range(0, len(flat), cfg.eval.batch_size))
    for begin in track(starts, description):
        chunk = flat[begin : begin + cfg.eval.batch_size]
        input_ids, attention_mask = _pad([c[1] for c in chunk], pad_id)
        batch = {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}
        if all(c[2] is not None for c in chunk):
            batch["token_type_ids"] = _pad([list(c[2] or []) for c in chunk], 0)[0].to(device)
        start_logits, end_logits = span_logits(model, batch)
        for row, (index, _, _, offsets, span) in enumerate(chunk):
            spans = best_span(start_logits[row].tolist(), end_logits[row].tolist(), span, qa.n_best, qa.max_answer_len)
            candidates[index] += [(score, offsets[s][0], offsets[e][1]) for score, s, e in spans[: qa.n_best]]
    out = []
    for index, record in enumerate(records):
        found = sorted(candidates[index], reverse=True)
        if not found:
            out.append({"prediction": "", "confidence": 0.0})
            continue
        scores = torch.tensor([c[0] for c in found[: qa.n_best]])
        _, start, end = found[0]
        out.append({"prediction": (record.context or "")[start:end], "confidence": float(scores.softmax(0)[0])})
    return out


def predict_records(model: Any, tokenizer: Any, records: Sequence[Pair], cfg: RunConfig, description: str) -> list:
    return predict_answers(model, tokenizer, records, cfg, description)


# ------------------------------------------------------------------ metrics


def references(record: Pair) -> list[str]:
    return record.references or [record.target]


def answer_scores(prediction: str, record: Pair) -> tuple[float, float]:
    """SQuAD's exact match and token F1 of one answer: the best over the reference answers."""
    refs = references(record)
    return max(exact_match(prediction, r) for r in refs), max(token_f1(prediction, r) for r in refs)


def score_records(predictions: Sequence[dict[str, Any]], records: Sequence[Pair], cfg: RunConfig) -> dict:
    """Exact match and token F1 (SQuAD v1.1 evaluation: normalised text, max over reference answers), 0-1."""
    scores = [answer_scores(p["prediction"], r) for p, r in zip(predictions, records, strict=True)]
    n = max(len(scores), 1)
    return {"exact_match": sum(s[0] for s in scores) / n, "token_f1": sum(s[1] for s in scores) / n}


def describe(record: Pair) -> dict[str, str]:
    return {"input": record.source_text, "reference": " | ".join(references(record))}


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def best_sentence(question: str, context: str) -> str:
    """The context sentence sharing the most (normalised) words with the question: a lexical-overlap baseline."""
    words = set(normalize(question).split())
    sentences = [s for s in _SENTENCE_END.split(context) if s.strip()] or [context]
    return max(sentences, key=lambda s: len(words & set(normalize(s).split())))


def baselines(train_records: Sequence[Record], records: Sequence[Pair], cfg: RunConfig) -> dict[str, list[dict]]:
    """The sentence of the context that overlaps the question most (what a reader without a model might pick)."""
    return {"best_sentence": [{"prediction": best_sentence(r.source_text, r.context or "")} for r in records]}


def details(predictions: Sequence[dict[str, Any]], records: Sequence[Pair], cfg: RunConfig) -> dict:
    """Exact match and token F1 by question word (what, who, when, ...): where the model is weak."""
    groups: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for prediction, record in zip(predictions, records, strict=True):
        words = normalize(record.source_text).split()
        kind = next((w for w in words if w in QUESTION_WORDS), "other")
        groups[kind].append(answer_scores(prediction["prediction"], record))
    return {
        "per_question_word": {
            kind: {
                "rows": len(s),
                "exact_match": sum(x[0] for x in s) / len(s),
                "token_f1": sum(x[1] for x in s) / len(s),
            }
            for kind, s in sorted(groups.items(), key=lambda kv: -len(kv[1]))
        }
    }


QUESTION_WORDS = ("what", "which", "who", "whom", "whose", "when", "where", "why", "how")


# fmt: off
RECIPE = Recipe(
    name="qa", accepts=(Pair,), peft_task_type="QUESTION_ANS", packs=False, methods=ENCODER_HEAD_METHODS,
    convert=convert, load_model=load_model, auto_class=auto_class, training=EngineTraining(encode_row, train_fns),
    evaluation=TaskEvaluation(
        predict_records, score_records,
        base_is_meaningful=False,  # a freshly initialised span head points anywhere
        baselines=baselines, details=details, describe=describe,
    ),
)
# fmt: on


def recipe(cfg: RunConfig) -> Recipe:
    return RECIPE
