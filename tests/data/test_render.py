"""Label masks: exactly the assistant tokens (and their end-of-turn token) carry loss."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from tunesmith.data.records import Chat, Message
from tunesmith.data.render import IGNORE_INDEX, encode_chat

TWO_TURNS = Chat(
    [
        Message("system", "Be brief."),
        Message("user", "How was the film?"),
        Message("assistant", "a charming journey"),
        Message("user", "And the acting?"),
        Message("assistant", "bleak and desperate"),
    ]
)


def labelled_text(tokenizer, chat: Chat, **kwargs) -> list[str]:
    """The labelled tokens, decoded as contiguous runs."""
    encoded = encode_chat(chat, tokenizer, **kwargs)
    runs, current = [], []
    for token, label in zip(encoded.input_ids, encoded.labels, strict=True):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    if current:
        runs.append(tokenizer.decode(current))
    return runs


def test_two_turn_chat_labels_only_assistant_replies(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert labelled_text(tokenizer, TWO_TURNS) == ["a charming journey<|im_end|>", "bleak and desperate<|im_end|>"]


def test_real_smollm2_template_masks_the_same_way(smollm2_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    chat = Chat(TWO_TURNS.messages[1:])  # no system message: the template inserts its default one
    assert labelled_text(tokenizer, chat) == ["a charming journey<|im_end|>", "bleak and desperate<|im_end|>"]


def test_weight_zero_reply_is_not_trained(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    messages = list(TWO_TURNS.messages)
    messages[2] = Message("assistant", "a charming journey", weight=0)
    assert labelled_text(tokenizer, Chat(messages)) == ["bleak and desperate<|im_end|>"]


def test_train_on_all_labels_every_token(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    encoded = encode_chat(TWO_TURNS, tokenizer, train_on="all")
    assert encoded.labels == encoded.input_ids


@pytest.mark.parametrize("max_len", [8, 30])
def test_truncation_is_reported(tiny_model_dir: Path, max_len: int) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    full = encode_chat(TWO_TURNS, tokenizer)
    cut = encode_chat(TWO_TURNS, tokenizer, max_len=max_len)
    assert cut.truncated and len(cut.input_ids) == max_len
    assert cut.labels == full.labels[:max_len]
