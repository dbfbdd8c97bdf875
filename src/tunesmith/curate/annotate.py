"""Pre-label rows with a model: compare the likelihood of each label word (no free-text parsing).

A generative model (an alias, hub id or folder) scores every label word after the prompt, zero- or few-shot
(K labelled rows of the file shown as earlier turns); a classifier gives its class probabilities. Which trained runs
can annotate, and how, is the pipeline's (``tunesmith.pipeline.annotators``). Rows a person labelled are never
touched.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tunesmith.core.errors import DataError
from tunesmith.data.labelfile import MODEL, Item, LabelFile, LabelSet, label_text, read_label_file, writable_kind
from tunesmith.data.load import Reject
from tunesmith.data.records import Message

CALIBRATION_TEXTS = ("N/A", "", "[MASK]")  # content-free inputs (Zhao et al. 2021, "Calibrate Before Use")


@dataclass
class AnnotateResult:
    out: Path
    labelled: int  # rows given a model label now
    kept_human: int  # rows a person labelled, left as they were
    outside_label_set: list[str] = field(default_factory=list)  # "file:line: label 'x'" of human labels not in set
    rejects: list[Reject] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # model labels given, per label
    shots: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "labelled_by_model": self.labelled,
            "kept_human_labels": self.kept_human,
            "model_label_counts": self.counts,
            "shots": self.shots,
            "outside_label_set": self.outside_label_set,
            "unreadable_rows": [r.to_dict() for r in self.rejects],
        }


class Scorer(Protocol):
    """What annotation needs from a model: P(label | row) for some rows of a file (each row sums to 1)."""

    def probabilities(
        self, data: LabelFile, items: Sequence[Item], labels: LabelSet, shots: list[tuple[str, str]]
    ) -> np.ndarray: ...


PromptFn = Callable[[Item, LabelFile, LabelSet, list[tuple[str, str]]], list[Message]]


@dataclass
class WordScorer:
    """A generative model: the likelihood of each label word after the chat prompt, optionally calibrated."""

    model: Any
    tokenizer: Any
    prompt: PromptFn
    batch_size: int = 8
    calibrate: bool = True

    def probabilities(
        self, data: LabelFile, items: Sequence[Item], labels: LabelSet, shots: list[tuple[str, str]]
    ) -> np.ndarray:
        from tunesmith.data.render import render_prompt

        def render(batch: Sequence[Item]) -> list[str]:
            return [render_prompt(self.prompt(i, data, labels, shots), self.tokenizer) for i in batch]

        words = list(labels.words)
        scores = word_loglik(self.model, self.tokenizer, render(items), words, self.batch_size)
        if self.calibrate:
            # Divide out the model's prior over the label words, measured on content-free inputs.
            free = [Item(-1, 0, {**items[0].values, data.text_column: t}) for t in CALIBRATION_TEXTS]
            prior = _softmax(word_loglik(self.model, self.tokenizer, render(free), words, self.batch_size)).mean(0)
            scores = scores - np.log(prior)
        return _softmax(scores)


def annotate_file(
    path: str | Path,
    labels: LabelSet,
    out: str | Path,
    scorer: Callable[[], Scorer],
    shots: int = 0,
    text_column: str | None = None,
    label_column: str = "label",
    seed: int = 0,
) -> AnnotateResult:
    """Label every row without a person's label; write ``label``, ``confidence``, ``label_source: model`` to ``out``.

    ``scorer`` loads the model; it is called only when some row needs a label.
    """
    out = Path(out)
    writable_kind(out)  # fail before loading a model if the result cannot be written there
    data = read_label_file(path, text_column, label_column)
    outside = [
        f"{data.where(i)}: label {i.label(label_column)!r}"
        for i in data.items
        if i.is_human(label_column) and i.label(label_column) not in labels.values
    ]
    todo = [i for i in data.items if not i.is_human(label_column)]
    examples = pick_shots(data, labels, shots, seed)
    # JSON files whose labels are numbers get numbers, so the column keeps one type.
    numeric = any(isinstance(i.values.get(label_column), int) for i in data.items)
    if todo:
        probs = scorer().probabilities(data, todo, labels, examples)
        for item, row in zip(todo, probs, strict=True):
            best = int(np.argmax(row))
            value = labels.values[best]
            item.values[label_column] = int(value) if numeric and value.lstrip("-").isdigit() else value
            item.values["confidence"] = round(float(row[best]), 4)
            item.values["label_source"] = MODEL
    data.save(out)
    counts = Counter(label_text(i.values[label_column]) for i in todo)
    return AnnotateResult(
        out, len(todo), len(data.items) - len(todo), outside, data.rejects, dict(counts), len(examples)
    )


def pick_shots(data: LabelFile, labels: LabelSet, k: int, seed: int) -> list[tuple[str, str]]:
    """K (text, label word) examples from rows a person labelled, taken in turn from each label (seeded)."""
    if k <= 0:
        return []
    by_label: dict[str, list[Item]] = {v: [] for v in labels.values}
    for item in data.items:
        if item.is_human(data.label_column) and item.label(data.label_column) in by_label:
            by_label[item.label(data.label_column)].append(item)
    rng = random.Random(seed)
    for pool in by_label.values():
        rng.shuffle(pool)
    picked: list[Item] = []
    while len(picked) < k and any(by_label.values()):
        for pool in by_label.values():
            if pool and len(picked) < k:
                picked.append(pool.pop())
    if len(picked) < k:
        raise DataError(
            f"{data.path}: --shots {k} needs {k} rows labelled by a person with a label in the set; "
            f"the file has {len(picked)}.\n  fix: label a few rows first, or use fewer shots"
        )
    rng.shuffle(picked)
    return [(data.text(i), labels.word(i.label(data.label_column))) for i in picked]


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def word_loglik(model: Any, tokenizer: Any, prompts: list[str], words: list[str], batch_size: int = 8) -> np.ndarray:
    """``[len(prompts), len(words)]``: sum of log-probabilities of each word's tokens following each prompt.

    Sequences are left-padded so every label word ends at the last position: only the last few positions'
    logits are computed (``logits_to_keep``), not the whole vocabulary at every prompt token.
    """
    import torch

    from tunesmith.core.progress import track

    word_ids = [tokenizer.encode(w, add_special_tokens=False) for w in words]
    keep = max(len(w) for w in word_ids) + 1
    prompt_ids = [tokenizer.encode(p, add_special_tokens=False) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(prompt_ids[i]))  # similar lengths pad less
    out = np.zeros((len(prompts), len(words)))
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model.eval()
    with torch.no_grad():
        for start in track(list(range(0, len(order), batch_size)), "annotate"):
            chunk = [(p, w) for p in order[start : start + batch_size] for w in range(len(words))]
            seqs = [prompt_ids[p] + word_ids[w] + [pad] * (keep - 1 - len(word_ids[w])) for p, w in chunk]
            width = max(len(s) for s in seqs)
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for row, ((_, w), seq) in enumerate(zip(chunk, seqs, strict=True)):
                ids[row, width - len(seq) :] = torch.tensor(seq)
                mask[row, width - len(seq) : width - (keep - 1 - len(word_ids[w]))] = 1
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = model(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                position_ids=positions.to(device),
                logits_to_keep=keep,
            ).logits.float()
            logprobs = logits.log_softmax(-1).cpu()  # [rows, keep, vocab]; position j predicts token j+1
            for row, (p, w) in enumerate(chunk):
                targets = torch.tensor(word_ids[w])
                out[p, w] = float(logprobs[row, torch.arange(len(targets)), targets].sum())
    return out


# ---------------------------------------------------------------- models that annotate


def model_scorer(model: str, batch_size: int = 8, calibrate: bool = True) -> Scorer:
    """A generative model (alias, hub id or folder) scoring label words after an instruction."""
    from tunesmith.core.config import ModelConfig
    from tunesmith.data.render import ensure_chat_template
    from tunesmith.models.load import load_causal_lm, load_tokenizer
    from tunesmith.models.resolve import resolve_model

    resolved = resolve_model(model)
    tokenizer = load_tokenizer(ModelConfig(name=model), resolved)
    ensure_chat_template(tokenizer)
    model_ = load_causal_lm(ModelConfig(name=model), resolved)
    return WordScorer(model_, tokenizer, _instruction_prompt, batch_size, calibrate)


def _instruction_prompt(item: Item, data: LabelFile, labels: LabelSet, shots: list[tuple[str, str]]) -> list[Message]:
    """Zero-/few-shot: a system instruction naming the labels, then the shots as earlier turns."""
    instruction = f"Classify the text. Answer with one label only: {', '.join(labels.words)}."
    messages = [Message("system", instruction)]
    for text, word in shots:
        messages += [Message("user", text), Message("assistant", word)]
    return [*messages, Message("user", data.text(item))]


@dataclass
class ClassifierScorer:
    """A classifier's class probabilities: ``predict`` maps texts to ``{"probabilities": {label: p}}`` rows (a
    trained classify run's head, or label words constrained to its label set); ``name`` says whose they are."""

    predict: Callable[[list[str]], list[dict[str, Any]]]
    name: str

    def probabilities(
        self, data: LabelFile, items: Sequence[Item], labels: LabelSet, shots: list[tuple[str, str]]
    ) -> np.ndarray:
        if shots:
            raise DataError("--shots applies to a generative model, not to a trained run (it was trained without)")
        texts = [data.text(i) for i in items]
        predictions = self.predict(texts)
        classes = list(predictions[0]["probabilities"]) if predictions else []
        unknown = [word for word in labels.words if word not in classes]
        if unknown:
            raise DataError(
                f"{self.name}: the run's classifier knows the labels {classes}, not {unknown}.\n"
                "  fix: pass --labels with the run's label words"
            )
        probs = np.array([[p["probabilities"][word] for word in labels.words] for p in predictions])
        return probs / probs.sum(axis=1, keepdims=True)  # renormalised over the labels asked for
