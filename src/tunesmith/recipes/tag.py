"""Token classification (NER, POS): a tag head on every token, trained on the first sub-token of each word.

Words are tokenized with ``is_split_into_words=True`` (a fast tokenizer's ``word_ids`` say which sub-tokens
belong to which word); the first sub-token of a word carries its tag, the others and the special tokens are
ignored (-100), the usual alignment (BERT paper, transformers' token-classification example). Predictions are
read back at the same positions, so every word gets exactly one tag; words cut off by truncation are tagged
``O`` and counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from tunesmith.core.config import RunConfig
from tunesmith.core.errors import ConfigError
from tunesmith.core.progress import track
from tunesmith.data.formats import RowError
from tunesmith.data.records import Record, Tagged
from tunesmith.metrics.tagging import entities, is_entity_scheme, per_type, tagging_metrics
from tunesmith.models.resolve import ResolvedModel
from tunesmith.recipes.contract import (
    ENCODER_HEAD_METHODS,
    Batch,
    EngineTraining,
    Recipe,
    TaskEnsemble,
    TaskEvaluation,
    TaskFns,
    TrainedRunView,
)

IGNORE_INDEX = -100


@dataclass
class TagExample:
    input_ids: list[int]
    tags: list[str | None]  # the word's tag on its first sub-token, None elsewhere (mapped to ids in collate)
    truncated: bool

    @property
    def n_targets(self) -> int:
        return sum(1 for tag in self.tags if tag is not None)


def convert(record: Record, cfg: RunConfig) -> Tagged:
    """The tagged sentence, with tags renamed by ``data.label_names`` when it is set (e.g. ``{0: O, 1: B-PER}``)."""
    if not isinstance(record, Tagged):
        raise RowError(f"the tag task needs tokens and tags, got a {type(record).__name__} row", "wrong_type")
    names = cfg.data.label_names
    if names:
        unknown = sorted({t for t in record.tags if t not in names})
        if unknown:
            raise RowError(f"field 'tags': {unknown[0]!r} is not in data.label_names", "unknown_label")
        record.tags = [names[t] for t in record.tags]
    return record


def labels(train_records: Iterable[Record]) -> list[str] | None:
    """The tag set: every tag of the training split, sorted."""
    return sorted({tag for record in train_records if isinstance(record, Tagged) for tag in record.tags}) or None


def tag_set(cfg: RunConfig) -> list[str]:
    """The tags in head order (the rule of ``Run.labels()``): ``data.label_names``' values, else the prepared
    training split's tags, sorted. Read here because batches need tag ids before the run hands over a model."""
    if cfg.data.labels:
        return cfg.data.labels
    from tunesmith.core.fs import read_jsonl
    from tunesmith.core.rundir import RunDir
    from tunesmith.data.records import record_from_dict

    path = RunDir(cfg.run_dir).split("train")
    found = labels(record_from_dict(row) for row in read_jsonl(path)) if path.is_file() else None
    if not found:
        raise ConfigError(f"the tag task found no tags in the prepared training split ({path}); prepare the data first")
    return found


def load_model(
    cfg: RunConfig, resolved: ResolvedModel | None = None, quantization: Any | None = None, labels: Any = None
) -> Any:
    from transformers import AutoModelForTokenClassification

    from tunesmith.models.load import load_pretrained

    if not labels:
        raise ConfigError("the tag task needs its tag set: prepare the data first (tags come from the train split)")
    model = load_pretrained(
        cfg.model,
        AutoModelForTokenClassification,
        resolved,
        quantization,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    check_positions(model, cfg)
    return model


def check_positions(model: Any, cfg: RunConfig) -> None:
    """An encoder with learned absolute positions cannot read rows longer than it has positions for."""
    positions = getattr(model.config, "max_position_embeddings", None)
    if getattr(model.config, "is_encoder_decoder", False) or not positions:
        return
    virtual = cfg.method.prompt.num_virtual_tokens if cfg.method.name == "prompt" else 0  # prepended to each row
    if cfg.training.max_seq_len + virtual > positions:
        extra = f" + {virtual} virtual tokens" if virtual else ""
        raise ConfigError(
            f"training.max_seq_len is {cfg.training.max_seq_len}{extra} but {cfg.model.name} has {positions} "
            f"positions.\n  fix: set training.max_seq_len to at most {positions - virtual}"
        )


def auto_class() -> type:
    from transformers import AutoModelForTokenClassification

    return AutoModelForTokenClassification


def _check_fast(tokenizer: Any) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(
            f"the tag task needs a fast tokenizer (word_ids align tags to sub-words); {type(tokenizer).__name__} "
            "is not one.\n  fix: use a model that ships tokenizer.json"
        )


def _tokenize(tokenizer: Any, sentences: list[list[str]], max_len: int, **kwargs: Any) -> Any:
    return tokenizer(sentences, is_split_into_words=True, truncation=True, max_length=max_len, **kwargs)


def align_tags(word_ids: Sequence[int | None], tags: Sequence[str]) -> list[str | None]:
    """Each word's tag on its first sub-token; None on its later sub-tokens and on special tokens."""
    out: list[str | None] = []
    previous = None
    for word in word_ids:
        out.append(tags[word] if word is not None and word != previous else None)
        previous = word
    return out


def encode_row(record: Tagged, tokenizer: Any, cfg: RunConfig) -> TagExample:
    """Sub-word ids with each word's tag on its first sub-token; truncation to training.max_seq_len is counted."""
    _check_fast(tokenizer)
    max_len = cfg.training.max_seq_len
    encoded = _tokenize(tokenizer, [record.tokens], max_len)
    word_ids = encoded.word_ids(0)
    # A word with no sub-tokens at all (e.g. a lone zero-width character) is not truncation: the last word is cut
    # only when the row is full.
    kept = max((w for w in word_ids if w is not None), default=-1)
    truncated = kept < len(record.tokens) - 1 and len(encoded["input_ids"][0]) >= max_len
    return TagExample(list(encoded["input_ids"][0]), align_tags(word_ids, record.tags), truncated)


def train_fns(tokenizer: Any, cfg: RunConfig, pack_len: int | None = None) -> TaskFns:
    index = {tag: i for i, tag in enumerate(tag_set(cfg))}
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    smoothing = cfg.training.label_smoothing
    return TaskFns(lambda examples: collate(examples, pad_id, index), count_targets, lambda m, b: loss(m, b, smoothing))


def collate(examples: Sequence[TagExample], pad_id: int, index: dict[str, int]) -> Batch:
    """Right-padded ids and tag ids (IGNORE_INDEX off first sub-tokens; a tag outside the tag set is ignored)."""
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        input_ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(
            [IGNORE_INDEX if t is None else index.get(t, IGNORE_INDEX) for t in example.tags]
        )
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def count_targets(batch: Batch) -> int:
    return int((batch["labels"] != IGNORE_INDEX).sum())


def token_logits(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Per-token logits aligned with ``input_ids`` (prompt tuning's virtual tokens come first and are dropped)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    return logits[:, -input_ids.shape[1] :]


def loss(model: Any, batch: Batch, label_smoothing: float = 0.0) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the labelled sub-tokens, and their count."""
    logits = token_logits(model, batch["input_ids"], batch["attention_mask"])
    labels = batch["labels"]
    total = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
        label_smoothing=label_smoothing,
    )
    return total, int((labels != IGNORE_INDEX).sum())


# ------------------------------------------------------------------ prediction and metrics


def _id2label(model: Any) -> dict[int, str]:
    config = model.config if not hasattr(model, "get_base_model") else model.get_base_model().config
    return {int(k): v for k, v in config.id2label.items()}


@torch.no_grad()
def word_probabilities(
    model: Any, tokenizer: Any, sentences: Sequence[Sequence[str]], max_len: int, batch_size: int, description: str
) -> list[list[list[float]]]:
    """Each sentence's tag probabilities (in the head's order) at the first sub-token of every word the model sees;
    words cut off by truncation (at the end) have none."""
    _check_fast(tokenizer)
    model.eval()
    device = next(model.parameters()).device
    out: list[list[list[float]]] = []
    starts = list(range(0, len(sentences), batch_size))
    for start in track(starts, description):
        chunk = [list(s) for s in sentences[start : start + batch_size]]
        encoded = _tokenize(tokenizer, chunk, max_len, padding=True, return_tensors="pt")
        logits = token_logits(model, encoded["input_ids"].to(device), encoded["attention_mask"].to(device))
        probs = logits.float().softmax(-1).cpu()
        for row in range(len(chunk)):
            firsts, previous = [], None
            for position, word in enumerate(encoded.word_ids(row)):
                if word is not None and word != previous:
                    firsts.append(position)
                previous = word
            out.append(probs[row, firsts].tolist())
    return out


def tags_from_probabilities(labels: Sequence[str], probabilities: Sequence[Sequence[float]], n_words: int) -> dict:
    """Word-level tags (``O`` for words the model did not see) and the mean probability of the chosen tags."""
    tags, confidences = ["O"] * n_words, []
    for word, probs in enumerate(probabilities):
        best = max(range(len(labels)), key=lambda k: probs[k])
        tags[word] = labels[best]
        confidences.append(float(probs[best]))
    return {"prediction": tags, "confidence": sum(confidences) / max(len(confidences), 1)}


def predict_tags(
    model: Any, tokenizer: Any, sentences: Sequence[Sequence[str]], max_len: int, batch_size: int, description: str
) -> list[dict[str, Any]]:
    """Word-level tags (and the mean probability of the chosen tags) for each sentence."""
    id2label = _id2label(model)
    labels = [id2label[i] for i in range(len(id2label))]
    probabilities = word_probabilities(model, tokenizer, sentences, max_len, batch_size, description)
    return [tags_from_probabilities(labels, p, len(s)) for p, s in zip(probabilities, sentences, strict=True)]


def run_word_probabilities(
    run: TrainedRunView, records: Sequence[Tagged], predictions: Sequence[dict[str, Any]]
) -> list[list[list[float]]]:
    """Each record's per-word tag probabilities from the run's tuned model (its predictions keep only the tags)."""
    model, tokenizer = run.load_tuned()
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    labels = [_id2label(model)[i] for i in range(len(_id2label(model)))]
    if labels != run.labels():
        raise ConfigError(f"{run.dir.root}: the model's tags {labels} differ from the run's {run.labels()}")
    cfg = run.config
    sentences = [r.tokens for r in records]
    return word_probabilities(model, tokenizer, sentences, cfg.training.max_seq_len, cfg.eval.batch_size, "ensemble")


def ensemble_prediction(labels: list[str], probabilities: list[list[float]], record: Tagged) -> dict[str, Any]:
    prediction = tags_from_probabilities(labels, probabilities, len(record.tokens))
    prediction["display"] = _show(record.tokens, prediction["prediction"])
    return prediction


def _show(tokens: Sequence[str], tags: Sequence[str]) -> str:
    """Entities as ``type: words`` (or the tags themselves for a tag set that is no chunk scheme)."""
    if not is_entity_scheme(set(tags)) and any(t != "O" for t in tags):
        return " ".join(f"{w}/{t}" for w, t in zip(tokens, tags, strict=True))
    found = sorted(entities(tuple(tags)), key=lambda e: e[1])
    return "; ".join(f"{kind}: {' '.join(tokens[a : b + 1])}" for kind, a, b in found) or "(no entities)"


def predict_records(
    model: Any, tokenizer: Any, records: Sequence[Tagged], cfg: RunConfig, description: str
) -> list[dict[str, Any]]:
    predictions = predict_tags(
        model, tokenizer, [r.tokens for r in records], cfg.training.max_seq_len, cfg.eval.batch_size, description
    )
    for prediction, record in zip(predictions, records, strict=True):
        prediction["display"] = _show(record.tokens, prediction["prediction"])
    return predictions


def scoring_scheme(cfg: RunConfig) -> str | None:
    """The scheme entities are scored in: BIO (strict) when ``data.tag_scheme`` is set, as the rows were converted
    to BIO when they were read; None (seqeval's lenient default mode) when the tags were taken as they are."""
    return "BIO" if cfg.data.tag_scheme else None


def score_records(predictions: Sequence[dict[str, Any]], records: Sequence[Tagged], cfg: RunConfig) -> dict:
    return tagging_metrics([p["prediction"] for p in predictions], [r.tags for r in records], scoring_scheme(cfg))


def describe(record: Tagged) -> dict[str, str]:
    """What the report shows of a test row: its words and its gold entities."""
    return {"input": " ".join(record.tokens), "reference": _show(record.tokens, record.tags)}


def baselines(train_records: Sequence[Record], records: Sequence[Tagged], cfg: RunConfig) -> dict[str, list[dict]]:
    """Every word tagged with the commonest training tag (``O`` for NER: no entities at all)."""
    counts = Counter(t for r in train_records if isinstance(r, Tagged) for t in r.tags)
    if not counts:
        return {}
    tag = counts.most_common(1)[0][0]
    name = "all_O" if tag == "O" else "majority_tag"
    return {
        name: [
            {"prediction": [tag] * len(r.tokens), "display": _show(r.tokens, [tag] * len(r.tokens))} for r in records
        ]
    }


def details(predictions: Sequence[dict[str, Any]], records: Sequence[Tagged], cfg: RunConfig) -> dict:
    """Precision, recall, F1 and support per entity type."""
    predicted, gold = [p["prediction"] for p in predictions], [r.tags for r in records]
    if not is_entity_scheme({t for g in gold for t in g}):
        return {}
    return {"per_type": per_type(predicted, gold, scoring_scheme(cfg))}


# fmt: off
RECIPE = Recipe(
    name="tag", accepts=(Tagged,), peft_task_type="TOKEN_CLS", packs=False, methods=ENCODER_HEAD_METHODS,
    labels=labels,  # every tag seen in training, not one label per row
    convert=convert, load_model=load_model, auto_class=auto_class, training=EngineTraining(encode_row, train_fns),
    evaluation=TaskEvaluation(
        predict_records, score_records,
        base_is_meaningful=False,  # a freshly initialised tag head predicts noise
        baselines=baselines, details=details, describe=describe,
        ensemble=TaskEnsemble(run_word_probabilities, ensemble_prediction),
    ),
)
# fmt: on


def recipe(cfg: RunConfig) -> Recipe:
    return RECIPE
