"""Classification augmentation: EDA word operations (Wei & Zou, 2019) and back-translation.

Only labelled training rows are augmented (the caller never passes validation or test rows); labels are kept.
Each augmented copy is a new record marked ``meta["augmented"] = True`` with the operation in
``meta["augment_op"]`` and its original in ``meta["augmented_from"]``.

The word operations are a few lines each and written here: the libraries that offer them (nlpaug, textattack)
pull in large dependency trees and, for synonyms, a WordNet download this offline setup cannot make. Synonyms
therefore come from a lexicon file the user supplies; without one, ``insert`` repeats a word of the row itself.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunesmith.core.config import AugmentConfig
from tunesmith.core.errors import DataError
from tunesmith.data.records import Labeled, Record

Lexicon = dict[str, list[str]]


def load_lexicon(path: str | Path) -> Lexicon:
    """A synonym lexicon: JSON ``{word: [synonyms]}`` or TSV lines ``word<TAB>syn1,syn2`` (keys lower-cased)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data.augment.synonyms: lexicon file not found: {path}")
    text = path.read_text(encoding="utf-8")
    lexicon: Lexicon = {}
    if path.suffix == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise DataError(f"{path}: expected an object {{word: [synonyms]}}, got {type(raw).__name__}")
        items = raw.items()
    else:
        items = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            word, sep, rest = line.partition("\t")
            if not sep:
                raise DataError(f"{path}:{number}: expected 'word<TAB>synonym[,synonym...]', got {line!r}")
            items.append((word, rest.split(",")))
    for word, synonyms in items:
        values = [synonyms] if isinstance(synonyms, str) else list(synonyms)
        clean = [s.strip() for s in values if isinstance(s, str) and s.strip() and s.strip().lower() != word.lower()]
        if clean:
            lexicon.setdefault(word.strip().lower(), []).extend(clean)
    return lexicon


def swap(words: list[str], rate: float, rng: random.Random, lexicon: Lexicon) -> list[str]:
    """Swap two random words, ``n`` times."""
    words = list(words)
    if len(words) < 2:
        return words
    for _ in range(_count(words, rate)):
        i, j = rng.sample(range(len(words)), 2)
        words[i], words[j] = words[j], words[i]
    return words


def delete(words: list[str], rate: float, rng: random.Random, lexicon: Lexicon) -> list[str]:
    """Drop each word with probability ``rate`` (at least one word is dropped, one is kept)."""
    if len(words) < 2:
        return list(words)
    kept = [w for w in words if rng.random() >= rate]
    if len(kept) == len(words):
        kept.pop(rng.randrange(len(kept)))
    return kept or [rng.choice(words)]


def insert(words: list[str], rate: float, rng: random.Random, lexicon: Lexicon) -> list[str]:
    """Insert a synonym of a random word (or, with no lexicon entry, a copy of it) at a random place, ``n`` times."""
    words = list(words)
    if not words:
        return words
    for _ in range(_count(words, rate)):
        word = rng.choice(words)
        synonyms = lexicon.get(_key(word))
        new = _match_case(rng.choice(synonyms), word) if synonyms else word
        words.insert(rng.randrange(len(words) + 1), new)
    return words


def synonym(words: list[str], rate: float, rng: random.Random, lexicon: Lexicon) -> list[str]:
    """Replace up to ``n`` words that have lexicon entries with one of their synonyms."""
    words = list(words)
    candidates = [i for i, w in enumerate(words) if _key(w) in lexicon]
    rng.shuffle(candidates)
    for i in candidates[: _count(words, rate)]:
        core = _key(words[i])
        replacement = _match_case(rng.choice(lexicon[core]), words[i].strip(_PUNCT))
        words[i] = words[i].replace(words[i].strip(_PUNCT), replacement, 1)
    return words


WORD_OPS: dict[str, Callable[[list[str], float, random.Random, Lexicon], list[str]]] = {
    "swap": swap,
    "delete": delete,
    "insert": insert,
    "synonym": synonym,
}
_PUNCT = ".,;:!?\"'()[]"


def _count(words: list[str], rate: float) -> int:
    return max(1, round(rate * len(words)))


def _key(word: str) -> str:
    return word.strip(_PUNCT).lower()


def _match_case(new: str, old: str) -> str:
    return new[:1].upper() + new[1:] if old[:1].isupper() else new


class BackTranslator:
    """Text -> pivot language -> back, with two seq2seq translation models (e.g. opus-mt-en-de and -de-en)."""

    def __init__(self, to_model: str, back_model: str, batch_size: int = 16) -> None:
        self.models = [_load_seq2seq(to_model), _load_seq2seq(back_model)]
        self.batch_size = batch_size

    def __call__(self, texts: list[str]) -> list[str]:
        for tokenizer, model in self.models:
            texts = self._translate(tokenizer, model, texts)
        return texts

    def _translate(self, tokenizer: Any, model: Any, texts: list[str]) -> list[str]:
        import torch

        result = []
        for start in range(0, len(texts), self.batch_size):
            batch = tokenizer(
                texts[start : start + self.batch_size], return_tensors="pt", padding=True, truncation=True
            )
            with torch.no_grad():
                # a translation is about as long as its source: twice the source length bounds a runaway model
                limit = 2 * batch["input_ids"].shape[1] + 8
                ids = model.generate(**batch, max_new_tokens=limit, num_beams=1, do_sample=False)
            result += tokenizer.batch_decode(ids, skip_special_tokens=True)
        return result


def _load_seq2seq(name: str) -> tuple[Any, Any]:
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    return AutoTokenizer.from_pretrained(name), AutoModelForSeq2SeqLM.from_pretrained(name, use_safetensors=True).eval()


def augment_records(
    records: list[Record],
    cfg: AugmentConfig,
    seed: int,
    translator: Callable[[list[str]], list[str]] | None = None,
) -> tuple[list[Record], Counter[str]]:
    """The records followed by ``cfg.copies`` augmented copies of each labelled one.

    Returns the new list and counts: ``added`` per operation, and ``unchanged`` copies left out because the
    operation could not change the row (e.g. swapping in a one-word text). Deterministic for a given seed.
    """
    counts: Counter[str] = Counter()
    if cfg.copies == 0:
        return records, counts
    rng = random.Random(seed)
    lexicon = load_lexicon(cfg.synonyms) if cfg.synonyms else {}
    planned: list[tuple[Labeled, int, str]] = []
    for record in records:
        if isinstance(record, Labeled):
            planned += [(record, copy, rng.choice(cfg.ops)) for copy in range(cfg.copies)]
        else:
            counts["not_labelled"] += 1
    texts: dict[int, str] = {}
    for index, (record, _, op) in enumerate(planned):
        if op != "back_translate":
            texts[index] = " ".join(WORD_OPS[op](record.text.split(), cfg.rate, rng, lexicon))
    pending = [i for i, (_, _, op) in enumerate(planned) if op == "back_translate"]
    if pending:
        translate = translator or BackTranslator(str(cfg.translate_to), str(cfg.translate_back))
        texts.update(zip(pending, translate([planned[i][0].text for i in pending]), strict=True))
    added: list[Record] = []
    for index, (record, copy, op) in enumerate(planned):
        text = texts[index].strip()
        if not text or text == record.text.strip():
            counts["unchanged"] += 1
            continue
        meta = {**record.meta, "augmented": True, "augment_op": op, "augmented_from": record.source}
        added.append(dataclasses.replace(record, text=text, source=f"{record.source}#aug{copy + 1}", meta=meta))
        counts[op] += 1
    return records + added, counts


def augment_train(splits: dict[str, list[Record]], data: Any, seed: int, ledger: Any) -> dict[str, Any]:
    """Augment ``splits["train"]`` in place (never validation or test); return the report's ``augmented`` entry.

    Called after dedup, leak removal and row limits, so copies neither count toward ``data.train_rows`` nor get
    dropped as near duplicates of their originals. The added rows enter the ledger as a source of their own, so
    rows_in = kept + dropped still holds.
    """
    cfg: AugmentConfig = data.augment
    if not cfg.copies:
        return {}
    train = splits["train"]
    records, counts = augment_records(train, cfg, seed)
    added = len(records) - len(train)
    splits["train"] = records
    ledger.rows_in["augmented: data.augment"] += added
    if counts["not_labelled"]:
        ledger.notes.append(
            f"data.augment: {counts['not_labelled']} training rows are not labelled text (text/label) and were not "
            "augmented"
        )
    by_op = {op: counts[op] for op in (*WORD_OPS, "back_translate") if counts[op]}
    return {"augmented": {"added": added, "by_op": by_op, "unchanged": counts["unchanged"]}}
