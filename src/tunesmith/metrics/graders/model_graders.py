"""``score_model`` and ``label_model``: a judge model reads the rendered messages and answers with a score or a label.

The judge is injected (``Judge``): a local model, a trained run or an OpenAI-compatible endpoint, implemented by a
higher layer. This module only renders the messages, asks, and reads the answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Protocol

from tunesmith.metrics.graders.templates import TemplateError, render

Conversation = list[dict[str, str]]  # [{"role", "content"}]
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


class Judge(Protocol):
    """Answers conversations with a model named by a grader's ``model`` (after any override)."""

    def replies(self, model: str, conversations: Sequence[Conversation], sampling: dict[str, Any]) -> list[str]:
        """One reply per conversation (``sampling``: OpenAI's sampling_params, possibly empty)."""
        ...

    def choose(self, model: str, conversations: Sequence[Conversation], labels: Sequence[str]) -> list[str]:
        """One of ``labels`` per conversation."""
        ...


def render_messages(messages: Sequence[Any], sample: dict[str, Any], item: dict[str, Any]) -> Conversation:
    """The grader's input messages with their templates filled (``developer`` is sent as ``system``)."""
    return [
        {"role": "system" if m.role == "developer" else m.role, "content": render(m.text, sample, item)}
        for m in messages
    ]


def with_instruction(conversation: Conversation, instruction: str) -> Conversation:
    """The instruction added to the system message (one is put first if there is none)."""
    if conversation and conversation[0]["role"] == "system":
        first = {"role": "system", "content": f"{conversation[0]['content']}\n\n{instruction}"}
        return [first, *conversation[1:]]
    return [{"role": "system", "content": instruction}, *conversation]


def read_score(reply: str, low: float, high: float) -> tuple[float, str | None]:
    """The score a judge's reply gives (JSON ``result`` / ``score``, else its first number), clipped into range;
    ``low`` with a reason when there is none."""
    value: Any = None
    try:
        parsed = json.loads(reply)
        if isinstance(parsed, dict):
            value = parsed.get("result", parsed.get("score"))
        elif isinstance(parsed, int | float):
            value = parsed
    except (json.JSONDecodeError, ValueError):
        pass
    if not isinstance(value, int | float) or isinstance(value, bool):
        match = NUMBER.search(reply)
        value = float(match.group()) if match else None
    if value is None:
        return low, f"the judge's reply has no score: {reply[:200]!r}"
    return min(max(float(value), low), high), None


def score_model(
    grader: Any, judge: Judge, model: str, samples: Sequence[dict[str, Any]], items: Sequence[dict[str, Any]]
) -> list[tuple[float, str | None]]:
    """(score, error) per sample."""
    low, high = grader.bounds
    instruction = f"Grade with a score from {low:g} to {high:g}. Reply with the number only."
    conversations, failed = _conversations(grader, samples, items, instruction)
    sampling = grader.sampling_params.model_dump(exclude_none=True) if grader.sampling_params else {}
    asked = [i for i in range(len(samples)) if i not in failed]
    replies = judge.replies(model, [conversations[i] for i in asked], sampling) if asked else []
    out: list[tuple[float, str | None]] = [(low, failed.get(i)) for i in range(len(samples))]
    for i, reply in zip(asked, replies, strict=True):
        out[i] = read_score(reply, low, high)
    return out


def label_model(
    grader: Any, judge: Judge, model: str, samples: Sequence[dict[str, Any]], items: Sequence[dict[str, Any]]
) -> list[tuple[str | None, str | None]]:
    """(label, error) per sample."""
    instruction = f"Answer with exactly one of these labels: {', '.join(grader.labels)}."
    conversations, failed = _conversations(grader, samples, items, instruction)
    asked = [i for i in range(len(samples)) if i not in failed]
    chosen = judge.choose(model, [conversations[i] for i in asked], grader.labels) if asked else []
    out: list[tuple[str | None, str | None]] = [(None, failed.get(i)) for i in range(len(samples))]
    for i, label in zip(asked, chosen, strict=True):
        out[i] = (label, None) if label in grader.labels else (None, f"the judge chose no label: {label!r}")
    return out


def _conversations(
    grader: Any, samples: Sequence[dict[str, Any]], items: Sequence[dict[str, Any]], instruction: str
) -> tuple[list[Conversation], dict[int, str]]:
    conversations: list[Conversation] = []
    failed: dict[int, str] = {}
    for i, (sample, item) in enumerate(zip(samples, items, strict=True)):
        try:
            conversations.append(with_instruction(render_messages(grader.input, sample, item), instruction))
        except TemplateError as exc:
            conversations.append([])
            failed[i] = str(exc)
    return conversations, failed
