"""One parser per row format: a row's values (canonical column names) to a typed record, or ``RowError``."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from tunesmith.data.fields import (
    MISSING,
    RowError,
    RowFormat,
    field_label,
    field_text,
    field_texts,
    field_value,
    lookup,
    render_template,
    template_fields,
)
from tunesmith.data.messages import parse_messages, prompt_messages, reply, transcript_messages
from tunesmith.data.records import Chat, Feedback, Labeled, Message, Pair, Preference, Record, Tagged, Text
from tunesmith.data.tag_schemes import SchemeError, to_bio
from tunesmith.data.tools import parse_tools

SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
SHAREGPT_ROLES |= {"chatgpt": "assistant", "bard": "assistant", "model": "assistant"}


def _messages(values: dict[str, Any], fmt: RowFormat) -> Chat:
    tools = parse_tools(values.get("tools"))
    return Chat(parse_messages(values.get("messages"), tools=tools), tools=tools.definitions if tools else None)


def _sharegpt(values: dict[str, Any], fmt: RowFormat) -> Chat:
    turns = field_value(values, "conversations")
    if not isinstance(turns, list) or not turns:
        raise RowError("field 'conversations': expected a non-empty list of {from, value} objects", "wrong_type")
    converted = []
    for index, turn in enumerate(turns):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise RowError(f"field 'conversations[{index}]': expected 'from' and 'value'", "message_missing_key")
        role = SHAREGPT_ROLES.get(str(turn["from"]).lower())
        if role is None:
            known = ", ".join(SHAREGPT_ROLES)
            raise RowError(
                f"field 'conversations[{index}]'.from: expected one of {known}, got {turn['from']!r}",
                "unrecognized_role",
            )
        item = {"role": role, "content": turn["value"]}
        if "weight" in turn:
            item["weight"] = turn["weight"]
        converted.append(item)
    return Chat(parse_messages(converted, "conversations"))


def _alpaca(values: dict[str, Any], fmt: RowFormat) -> Chat:
    instruction = field_text(values, "instruction")
    extra = values.get("input") or ""
    if not isinstance(extra, str):
        raise RowError(f"field 'input': expected a string, got {type(extra).__name__}", "wrong_type")
    prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    messages = [Message("user", prompt), Message("assistant", field_text(values, "output"))]
    if isinstance(values.get("system"), str) and values["system"].strip():
        messages.insert(0, Message("system", values["system"]))
    return Chat(messages)


def _prompt_completion(values: dict[str, Any], fmt: RowFormat) -> Chat:
    prompt = prompt_messages(field_value(values, "prompt"), "prompt")
    return Chat([*prompt, Message("assistant", reply(field_value(values, "completion"), "completion"))])


def _template(values: dict[str, Any], fmt: RowFormat) -> Chat:
    fields = dict(values)
    label = None
    if fmt.label_names and fmt.label_column in fields:
        label = field_label(fields, fmt.label_column, fmt)
        fields[fmt.label_column] = fmt.label_names[label]
    prompt = render_template(fmt.prompt_template or "", fields)
    completion = render_template(fmt.completion_template, fields)
    if not prompt.strip():
        raise RowError("empty prompt", "empty_text")
    if not completion.strip():
        raise RowError("empty completion", "empty_text")
    # Duplicates are judged on the row's own values, not on the template text every row shares.
    used = template_fields(fmt.prompt_template or "") + template_fields(fmt.completion_template)
    shown = (lookup(values, k) for k in dict.fromkeys(used))
    meta: dict[str, Any] = {"content": "\n".join("" if v is MISSING else str(v) for v in shown)}
    if label:
        meta["label"] = label
    return Chat([Message("user", prompt), Message("assistant", completion)], meta=meta)


def _labeled(values: dict[str, Any], fmt: RowFormat) -> Labeled:
    pair = values.get("text_pair")
    if pair is not None and not isinstance(pair, str):
        raise RowError(f"field 'text_pair': expected a string, got {type(pair).__name__}", "wrong_type")
    return Labeled(field_text(values, "text"), field_label(values, "label", fmt), pair)


def _tagged(values: dict[str, Any], fmt: RowFormat) -> Tagged:
    tokens, tags = field_value(values, "tokens"), field_value(values, "tags")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise RowError("field 'tokens': expected a list of strings", "wrong_type")
    if not isinstance(tags, list) or not all(isinstance(t, str | int) for t in tags):
        raise RowError("field 'tags': expected a list of tags", "wrong_type")
    if not tokens:
        raise RowError("field 'tokens': empty", "empty_text")
    if len(tokens) != len(tags):
        raise RowError(f"{len(tokens)} tokens but {len(tags)} tags", "wrong_type")
    tags = [str(t) for t in tags]
    if fmt.tag_scheme:
        try:
            tags = to_bio(tags, fmt.tag_scheme)
        except SchemeError as exc:
            raise RowError(f"field 'tags': {exc} (data.tag_scheme: {fmt.tag_scheme})", "invalid_tags") from None
    return Tagged(tokens, tags)


def _pair(values: dict[str, Any], fmt: RowFormat) -> Pair:
    targets = [t for t in field_texts(values, "target") if t.strip()]
    return Pair(" ".join(field_texts(values, "source")), targets[0], references=targets if len(targets) > 1 else [])


def _squad(values: dict[str, Any], fmt: RowFormat) -> Pair:
    answers, starts = field_value(values, "answers"), values.get("answer_starts")
    if isinstance(answers, dict):  # Hugging Face layout: {"text": [...], "answer_start": [...]}
        answers, starts = answers.get("text", []), answers.get("answer_start")
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
        raise RowError("field 'answers': expected a non-empty list of answer texts", "wrong_type")
    # Where each answer starts in the context (extractive QA trains on that span; it is found by search if absent).
    meta = {"answer_starts": list(starts)} if isinstance(starts, list) else {}
    return Pair(
        field_text(values, "question"), answers[0], context=field_text(values, "context"), references=answers, meta=meta
    )


def _preference(values: dict[str, Any], fmt: RowFormat) -> Preference:
    if "prompt" in values:
        prompt = prompt_messages(values["prompt"], "prompt")
        return Preference(
            prompt, reply(field_value(values, "chosen"), "chosen"), reply(field_value(values, "rejected"), "rejected")
        )
    # Anthropic HH-RLHF: two whole transcripts that share everything up to the final "Assistant:" turn.
    # The cut is the last marker inside their common prefix: replies can themselves contain the marker.
    chosen, rejected = field_text(values, "chosen"), field_text(values, "rejected")
    marker = "\n\nAssistant:"
    cut = os.path.commonprefix([chosen, rejected]).rfind(marker)  # noqa: RUF071 -- character prefix intended
    if cut < 0:
        raise RowError(
            "missing field 'prompt' (and chosen/rejected are not Human:/Assistant: transcripts with a shared prompt)",
            "missing_field",
        )
    return Preference(
        transcript_messages(chosen[:cut]),
        chosen[cut + len(marker) :].strip(),
        rejected[cut + len(marker) :].strip(),
    )


def _openai_preference(values: dict[str, Any], fmt: RowFormat) -> Preference:
    return Preference(
        prompt_messages(field_value(values, "input"), "input"),
        reply(field_value(values, "preferred_output"), "preferred_output"),
        reply(field_value(values, "non_preferred_output"), "non_preferred_output"),
    )


def _feedback(values: dict[str, Any], fmt: RowFormat) -> Feedback:
    raw = field_value(values, "label")
    label = {"true": True, "1": True, "false": False, "0": False}.get(str(raw).strip().lower())
    if label is None:
        raise RowError(f"field 'label': expected true or false, got {raw!r}", "unknown_label")
    prompt = prompt_messages(field_value(values, "prompt"), "prompt")
    return Feedback(prompt, reply(field_value(values, "completion"), "completion"), label)


def _raw_text(values: dict[str, Any], fmt: RowFormat) -> Text:
    return Text(field_text(values, "text"))


PARSERS: dict[str, Callable[[dict[str, Any], RowFormat], Record]] = {
    "messages": _messages,
    "sharegpt": _sharegpt,
    "openai_preference": _openai_preference,
    "preference": _preference,
    "feedback": _feedback,
    "prompt_completion": _prompt_completion,
    "alpaca": _alpaca,
    "squad": _squad,
    "pair": _pair,
    "tagged": _tagged,
    "labeled": _labeled,
    "text": _raw_text,
    "template": _template,
}
