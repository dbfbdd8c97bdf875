"""Render a chat with the tokenizer's chat template and mark which tokens carry loss.

The mask is computed from character spans: each assistant reply's span is found by rendering the
conversation up to that reply with and without it, then every token that starts inside a reply span
is a target. This works with any prefix-stable chat template, not just ones with ``{% generation %}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunesmith.core.errors import DataError
from tunesmith.data.records import Chat, Message
from tunesmith.data.tool_format import template_messages

IGNORE_INDEX = -100

# Used only when a tokenizer ships no chat template (base models): ChatML with the tokenizer's EOS.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool

    @property
    def n_targets(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)

    def pieces(self, tokenizer: Any) -> list[tuple[str, bool]]:
        """The text in runs of trained / untrained tokens: ``(text, trained)``, what ``data preview`` marks."""
        out: list[tuple[str, bool]] = []
        current: list[int] = []
        trained = False
        for token, label in [*zip(self.input_ids, self.labels, strict=True), (None, None)]:
            is_trained = label is not None and label != IGNORE_INDEX
            if token is None or is_trained != trained:
                if current:
                    out.append((tokenizer.decode(current), trained))
                current, trained = [], is_trained
            if token is not None:
                current.append(token)
        return out


def ensure_chat_template(tokenizer: Any) -> bool:
    """Give a tokenizer without a chat template the fallback one; return True if it was added."""
    if getattr(tokenizer, "chat_template", None):
        return False
    if tokenizer.eos_token is None:
        raise DataError("the tokenizer has neither a chat template nor an EOS token; set one before training")
    tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    return True


def render_prompt(messages: list[Message], tokenizer: Any, tools: list[dict[str, Any]] | None = None) -> str:
    """The text a model continues to answer: the conversation plus the assistant generation prompt."""
    dicts, tools_arg, _ = template_messages(messages, tools, tokenizer)
    return _apply(tokenizer, dicts, tools_arg, add_generation_prompt=True)


def render_chat(chat: Chat, tokenizer: Any) -> str:
    """The whole conversation as the model reads it in training (tools included)."""
    dicts, tools_arg, _ = template_messages(chat.messages, chat.tools, tokenizer)
    return _apply(tokenizer, dicts, tools_arg)


def _apply(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    add_generation_prompt: bool = False,
) -> str:
    options = {"tools": tools} if tools else {}
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt, **options
    )


def encode_chat(chat: Chat, tokenizer: Any, train_on: str = "assistant", max_len: int | None = None) -> Encoded:
    """Token ids and labels for a chat; labels are IGNORE_INDEX outside the trained spans (an assistant's text and
    its tool calls are trained; tool replies are not)."""
    messages, tools, trained = template_messages(chat.messages, chat.tools, tokenizer)
    text = _apply(tokenizer, messages, tools)
    spans = [(0, len(text))] if train_on == "all" else _assistant_spans(chat, messages, tools, trained, text, tokenizer)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(encoding["input_ids"])
    labels = [
        token if any(lo <= start < hi for lo, hi in spans) else IGNORE_INDEX
        for token, (start, _end) in zip(input_ids, encoding["offset_mapping"], strict=True)
    ]
    truncated = max_len is not None and len(input_ids) > max_len
    if truncated:
        input_ids, labels = input_ids[:max_len], labels[:max_len]
    return Encoded(input_ids, labels, truncated)


def _assistant_spans(
    chat: Chat,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    trained: list[bool],
    text: str,
    tokenizer: Any,
) -> list[tuple[int, int]]:
    spans = []
    for index, is_trained in enumerate(trained):
        if not is_trained:
            continue
        before = _apply(tokenizer, messages[:index], tools, add_generation_prompt=True)
        through = _apply(tokenizer, messages[: index + 1], tools)
        if not (through.startswith(before) and text.startswith(through)):
            raise DataError(
                f"{chat.source}: the chat template does not render conversations prefix-stably, so assistant "
                "tokens cannot be located; use task.train_on=all or a different chat template"
            )
        # The reply and its end-of-turn token; trailing newlines after the turn are template glue.
        spans.append((len(before), len(through.rstrip())))
    return spans


def _dicts(messages: list[Message]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]
