"""Classification augmentation: labels kept, rows marked, only training rows, off by default."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers.paths import SST2
from tunesmith.core.config import AugmentConfig, DataConfig, TaskConfig
from tunesmith.core.errors import ConfigError
from tunesmith.data.augment import augment_records, delete, insert, load_lexicon, swap, synonym
from tunesmith.data.prepare import prepare_data
from tunesmith.data.records import Chat, Labeled

WORDS = ["the", "film", "is", "a", "warm", "and", "funny", "story", "about", "two", "old", "friends"]


def test_word_operations_change_the_words_as_described() -> None:
    import random

    rng = random.Random(0)
    swapped = swap(WORDS, 0.1, rng, {})
    assert sorted(swapped) == sorted(WORDS) and swapped != WORDS
    deleted = delete(WORDS, 0.2, rng, {})
    assert 0 < len(deleted) < len(WORDS) and all(w in WORDS for w in deleted)
    inserted = insert(WORDS, 0.2, rng, {"funny": ["amusing"]})
    assert len(inserted) == len(WORDS) + 2 and Counter(inserted) - Counter(WORDS)  # two words more
    replaced = synonym(["A", "Funny,", "film"], 0.5, rng, {"funny": ["amusing"], "film": ["movie"]})
    assert replaced in (["A", "Amusing,", "film"], ["A", "Funny,", "movie"], ["A", "Amusing,", "movie"])
    assert delete(["one"], 0.5, rng, {}) == ["one"]  # never empties a row


def test_augmented_copies_keep_labels_and_are_marked() -> None:
    rows = [
        Labeled(f"row {i} " + " ".join(WORDS), "positive" if i % 2 else "negative", source=f"f:{i}") for i in range(6)
    ]
    out, counts = augment_records(rows, AugmentConfig(copies=2, ops=["swap", "delete", "insert"]), seed=1)
    added = out[len(rows) :]
    assert out[: len(rows)] == rows and len(added) + counts["unchanged"] == 12
    originals = {r.source: r for r in rows}
    for row in added:
        original = originals[row.meta["augmented_from"]]
        assert row.label == original.label and row.text != original.text
        assert row.meta["augmented"] is True and row.meta["augment_op"] in ("swap", "delete", "insert")
        assert row.source.startswith(original.source + "#aug")
    assert sum(counts[op] for op in ("swap", "delete", "insert")) == len(added)
    again, _ = augment_records(rows, AugmentConfig(copies=2), seed=1)
    assert [r.text for r in again] == [r.text for r in out]  # seeded


def test_back_translation_uses_the_configured_translator() -> None:
    rows = [Labeled("a fine film", "positive", source="f:1")]
    config = AugmentConfig(copies=1, ops=["back_translate"], translate_to="to-model", translate_back="back-model")
    out, counts = augment_records(
        rows, config, seed=0, translator=lambda texts: [t.replace("fine", "good") for t in texts]
    )
    assert (
        out[1].text == "a good film" and out[1].meta["augment_op"] == "back_translate" and counts["back_translate"] == 1
    )


def test_synonym_needs_a_lexicon_and_lexicon_files_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synonyms"):
        AugmentConfig(copies=1, ops=["synonym"])
    with pytest.raises(ValueError, match="translate_to"):
        AugmentConfig(copies=1, ops=["back_translate"])
    tsv = tmp_path / "lex.tsv"
    tsv.write_text("funny\tamusing,comic\nfilm\tmovie\n", encoding="utf-8")
    assert load_lexicon(tsv) == {"funny": ["amusing", "comic"], "film": ["movie"]}
    bad = tmp_path / "bad.tsv"
    bad.write_text("funny amusing\n", encoding="utf-8")
    with pytest.raises(Exception, match=r"bad.tsv:1"):
        load_lexicon(bad)


def _data(**augment: object) -> DataConfig:
    return DataConfig(
        train=str(SST2 / "train.tsv"),
        test=str(SST2 / "dev.tsv"),
        label_names={"0": "negative", "1": "positive"},
        train_rows=40,
        test_rows=20,
        validation_fraction=0.2,
        augment=augment,
    )


def test_prepare_augments_train_only_and_accounts_for_the_rows(tmp_path: Path) -> None:
    plain = prepare_data(_data(), TaskConfig(), seed=3)
    augmented = prepare_data(_data(copies=1, ops=["swap", "delete"]), TaskConfig(), seed=3)
    for split in ("validation", "test"):  # untouched: the same rows, none marked
        assert [c.to_dict() for c in augmented.splits[split]] == [c.to_dict() for c in plain.splits[split]]
        assert not any(c.meta.get("augmented") for c in augmented.splits[split])
    train = augmented.splits["train"]
    marked = [c for c in train if c.meta.get("augmented")]
    assert len(train) == len(plain.splits["train"]) + len(marked) and len(marked) > 0.8 * len(plain.splits["train"])
    by_source = {c.source: c for c in train}
    for chat in marked:
        original = by_source[chat.meta["augmented_from"]]
        assert isinstance(chat, Chat) and chat.reference() == original.reference()  # the label word is kept
        assert chat.meta["label"] == original.meta["label"]
    report = augmented.report()
    assert report["balanced"] and report["augmented"]["added"] == len(marked)
    assert json.dumps(report)  # serialisable


def test_augmentation_is_off_by_default_and_labelled_data_only() -> None:
    assert AugmentConfig().copies == 0
    with pytest.raises(ConfigError):
        from tunesmith.core.config import validate_config

        validate_config({"model": {"name": "x"}, "data": {"train": "t.jsonl", "augment": {"copies": -1}}})


def test_back_translation_runs_real_seq2seq_models(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Two tiny random T5 models stand in for a translation pair: the real loading and generation path runs,
    and every augmented row keeps its label (the text is whatever the random models write)."""
    import shutil

    import torch
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    folders = []
    for name in ("to", "back"):
        folder = tmp_path / name
        folder.mkdir()
        for file in tiny_model_dir.glob("tokenizer*"):
            shutil.copy(file, folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        torch.manual_seed(len(folders))
        config = T5Config(
            vocab_size=len(tokenizer), d_model=32, d_ff=64, d_kv=8, num_layers=1, num_heads=2,
            decoder_start_token_id=tokenizer.pad_token_id, pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )  # fmt: skip
        T5ForConditionalGeneration(config).save_pretrained(folder)
        folders.append(str(folder))
    rows = [Labeled(f"a fine film number {i}", "positive", source=f"f:{i}") for i in range(3)]
    config = AugmentConfig(copies=1, ops=["back_translate"], translate_to=folders[0], translate_back=folders[1])
    out, counts = augment_records(rows, config, seed=0)
    added = out[3:]
    assert counts["back_translate"] + counts["unchanged"] == 3
    assert all(r.label == "positive" and r.meta["augment_op"] == "back_translate" for r in added)
