"""Row formats: detect which one a file uses and turn its rows into typed records.

A row problem raises ``RowError`` with a ``kind`` (``missing_field``, ``wrong_type``, ...) that ``data check``
groups by and the report counts by.
"""

from __future__ import annotations

import os
import string
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tunesmith.data.load import Reject, Row
from tunesmith.data.records import ROLES, Chat, Feedback, Labeled, Message, Pair, Preference, Record, Tagged, Text
from tunesmith.errors import DataError

# format -> the columns that identify it, in detection order (more specific first).
SIGNATURES: dict[str, tuple[str, ...]] = {
    "messages": ("messages",),
    "sharegpt": ("conversations",),
    "openai_preference": ("input", "preferred_output", "non_preferred_output"),
    "preference": ("chosen", "rejected"),
    "feedback": ("prompt", "completion", "label"),
    "prompt_completion": ("prompt", "completion"),
    "alpaca": ("instruction", "output"),
    "squad": ("context", "question", "answers"),
    "pair": ("source", "target"),
    "tagged": ("tokens", "tags"),
    "labeled": ("text", "label"),
    "text": ("text",),
}
FORMATS = (*SIGNATURES, "template")
SYNONYMS = {"sentence": "text", "ner_tags": "tags"}  # common names of canonical columns
MESSAGE_KEYS = ("role", "content", "name", "weight", "tool_calls", "tool_call_id", "function_call")
_MESSAGE_KEYS = frozenset(MESSAGE_KEYS)
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
SHAREGPT_ROLES |= {"chatgpt": "assistant", "bard": "assistant", "model": "assistant"}


class RowError(ValueError):
    """One row cannot become a record; ``kind`` names the problem, the message says which field and why."""

    def __init__(self, message: str, kind: str = "invalid_row") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class RowFormat:
    """How rows of one file become records."""

    kind: str
    prompt_template: str | None = None
    completion_template: str = "{completion}"
    label_column: str = "label"
    label_names: dict[str, str] = field(default_factory=dict)
    columns: dict[str, str] = field(default_factory=dict)  # canonical name -> the file's column


def canonical(values: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    """Rename a row's columns to the canonical names: the config's ``data.columns`` first, then synonyms."""
    if not columns:
        if not any(theirs in values for theirs in SYNONYMS):
            return values  # nothing to rename: parsers only read the row
        out = dict(values)
    else:
        renamed = {theirs: ours for ours, theirs in columns.items()}
        out = {renamed.get(k, k): v for k, v in values.items()}
    for theirs, ours in SYNONYMS.items():
        if theirs in out and ours not in out:
            out[ours] = out.pop(theirs)
    return out


def row_format(keys: list[str] | set[str]) -> str | None:
    """The first format whose identifying columns are all present."""
    return next((name for name, needed in SIGNATURES.items() if set(needed) <= set(keys)), None)


def detect_format(
    path: Any, rows: list[Row], requested: str, prompt_template: str | None, columns: dict[str, str] | None = None
) -> str:
    """The config's format, or for ``auto`` the format most rows have (a template if one is set)."""
    if requested != "auto":
        return requested
    if prompt_template:
        return "template"
    votes = Counter(row_format(canonical(r.values, columns or {}).keys()) for r in rows[:1000])
    votes.pop(None, None)
    if votes:
        return votes.most_common(1)[0][0]
    seen = list(dict.fromkeys(k for r in rows[:1000] for k in r.values))
    raise DataError(
        f"{path}: cannot tell the data format from its columns ({', '.join(seen)}).\n"
        "  expected one of: " + "; ".join(f"{n} ({'+'.join(c)})" for n, c in SIGNATURES.items()) + "\n"
        "  fix: map your columns with data.columns (e.g. {text: review, label: stars}), "
        "or set data.prompt_template (e.g. 'Review: {sentence}') with data.completion_template"
    )


def check_columns(path: Any, seen: list[str], fmt: RowFormat) -> None:
    """Fail before any work if the format needs a column the file does not have."""
    if fmt.kind == "template":
        needed = template_fields(fmt.prompt_template or "") + template_fields(fmt.completion_template)
    else:
        needed = list(SIGNATURES.get(fmt.kind, ()))
    present = set(canonical(dict.fromkeys(seen), fmt.columns)) | set(seen)
    missing = [c for c in dict.fromkeys(needed) if c not in present]
    if missing:
        raise DataError(
            f"{path}: column {', '.join(repr(c) for c in missing)} is not in the file "
            f"(columns: {', '.join(seen)}).\n  fix: rename the column, map it with data.columns, or change "
            "data.prompt_template / data.completion_template / data.format"
        )


def template_fields(template: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name]
    except ValueError as exc:
        raise DataError(f"invalid template {template!r}: {exc}") from None


def rows_to_records(path: Any, rows: list[Row], fmt: RowFormat) -> tuple[list[Record], list[Reject]]:
    """Convert rows; a row that cannot be converted is rejected with its kind and reason, never lost."""
    parse = PARSERS[fmt.kind]
    records: list[Record] = []
    rejects: list[Reject] = []
    for row in rows:
        where = f"{row.file or path}:{row.line}"
        values = row.values if fmt.kind == "template" else canonical(row.values, fmt.columns)
        try:
            record = parse(values, fmt)
        except RowError as exc:
            reason = str(exc)
            other = row_format(canonical(row.values, fmt.columns).keys())
            if exc.kind == "missing_field" and other and other != fmt.kind:
                reason += f" (this row looks like '{other}' but the file is '{fmt.kind}': mixed formats in one file)"
            rejects.append(Reject(where, reason, _excerpt(row.values), kind=exc.kind))
            continue
        record.source = where
        records.append(record)
    return records, rejects


def _excerpt(values: dict[str, Any]) -> str:
    text = str(values)
    return text if len(text) <= 120 else text[:117] + "..."


# ---------------------------------------------------------------- field helpers


def _get(values: dict[str, Any], key: str) -> Any:
    if key not in values or values[key] is None:
        raise RowError(f"missing field '{key}'", "missing_field")
    return values[key]


def _text(values: dict[str, Any], key: str, allow_empty: bool = False) -> str:
    value = _get(values, key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise RowError(f"field '{key}': expected a string, got {type(value).__name__}", "wrong_type")
    if not allow_empty and not value.strip():
        raise RowError(f"field '{key}': empty text", "empty_text")
    return value


def _text_or_list(values: dict[str, Any], key: str) -> list[str]:
    """A string, or a list of strings (SciTLDR keeps sentences and references as lists)."""
    value = _get(values, key)
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) for v in items):
        raise RowError(f"field '{key}': expected a string or a list of strings", "wrong_type")
    if not any(v.strip() for v in items):
        raise RowError(f"field '{key}': empty text", "empty_text")
    return items


def _label(values: dict[str, Any], key: str, fmt: RowFormat) -> str:
    value = values.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RowError(f"field '{key}': missing label", "missing_label")
    if isinstance(value, dict | list):
        raise RowError(f"field '{key}': expected a label value, got {type(value).__name__}", "wrong_type")
    label = str(value).strip()
    if fmt.label_names and label not in fmt.label_names:
        raise RowError(
            f"field '{key}': label {value!r} is not in data.label_names ({', '.join(fmt.label_names)})",
            "unknown_label",
        )
    return label


def parse_messages(raw: Any, key: str = "messages", need_assistant: bool = True) -> list[Message]:
    """OpenAI chat messages, checked the way OpenAI's fine-tuning data validator checks them."""
    if raw is None:
        raise RowError(f"missing field '{key}'", "missing_field")
    if not isinstance(raw, list) or not raw:
        raise RowError(f"field '{key}': expected a non-empty list of {{role, content}} objects", "wrong_type")
    messages = []
    replies = 0
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise RowError(f"field '{key}[{index}]': expected an object with 'role' and 'content'", "wrong_type")
        if "role" not in item or "content" not in item:
            missing = "role" if "role" not in item else "content"
            raise RowError(f"field '{key}[{index}]': missing key '{missing}'", "message_missing_key")
        if len(item) > 2 and not _MESSAGE_KEYS.issuperset(item):
            unknown = next(k for k in item if k not in _MESSAGE_KEYS)
            raise RowError(f"field '{key}[{index}]': unrecognised key '{unknown}'", "unrecognized_key")
        role, content = item["role"], item["content"]
        if role not in ROLES:
            raise RowError(
                f"field '{key}[{index}]'.role: expected one of {', '.join(ROLES)}, got {role!r}", "unrecognized_role"
            )
        if not isinstance(content, str):
            raise RowError(f"field '{key}[{index}]'.content: expected text, got {type(content).__name__}", "wrong_type")
        if not content or content.isspace():
            raise RowError(f"field '{key}[{index}]'.content: expected non-empty text", "empty_content")
        weight = item.get("weight")
        if weight is not None and weight not in (0, 1):
            raise RowError(f"field '{key}[{index}]'.weight: expected 0 or 1, got {weight!r}", "wrong_type")
        messages.append(Message(role, content, weight))
        replies += role == "assistant"
    if need_assistant and not replies:
        raise RowError(f"field '{key}': no assistant message to learn from", "no_assistant_message")
    return messages


def _prompt_messages(value: Any, key: str) -> list[Message]:
    """A prompt given as text (one user message) or as a list of messages."""
    if isinstance(value, str):
        if not value.strip():
            raise RowError(f"field '{key}': empty text", "empty_text")
        return [Message("user", value)]
    if isinstance(value, dict) and "messages" in value:  # OpenAI DPO: {"input": {"messages": [...]}}
        value = value["messages"]
    return parse_messages(value, key, need_assistant=False)


def _reply(value: Any, key: str) -> str:
    """A reply given as text or as a list of messages (its last assistant message)."""
    if isinstance(value, list):
        replies = [m for m in parse_messages(value, key) if m.role == "assistant"]
        return replies[-1].content
    if not isinstance(value, str):
        raise RowError(f"field '{key}': expected a string or a list of messages", "wrong_type")
    if not value.strip():
        raise RowError(f"field '{key}': empty text", "empty_text")
    return value


# ---------------------------------------------------------------- one parser per format


def _messages(values: dict[str, Any], fmt: RowFormat) -> Chat:
    return Chat(parse_messages(values.get("messages")))


def _sharegpt(values: dict[str, Any], fmt: RowFormat) -> Chat:
    turns = _get(values, "conversations")
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
    instruction = _text(values, "instruction")
    extra = values.get("input") or ""
    if not isinstance(extra, str):
        raise RowError(f"field 'input': expected a string, got {type(extra).__name__}", "wrong_type")
    prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    messages = [Message("user", prompt), Message("assistant", _text(values, "output"))]
    if isinstance(values.get("system"), str) and values["system"].strip():
        messages.insert(0, Message("system", values["system"]))
    return Chat(messages)


def _prompt_completion(values: dict[str, Any], fmt: RowFormat) -> Chat:
    prompt = _prompt_messages(_get(values, "prompt"), "prompt")
    return Chat([*prompt, Message("assistant", _reply(_get(values, "completion"), "completion"))])


def _template(values: dict[str, Any], fmt: RowFormat) -> Chat:
    fields = dict(values)
    label = None
    if fmt.label_names and fmt.label_column in fields:
        label = _label(fields, fmt.label_column, fmt)
        fields[fmt.label_column] = fmt.label_names[label]
    try:
        prompt = (fmt.prompt_template or "").format(**fields)
        completion = fmt.completion_template.format(**fields)
    except KeyError as exc:
        raise RowError(f"missing field {exc}", "missing_field") from None
    if not prompt.strip():
        raise RowError("empty prompt", "empty_text")
    if not completion.strip():
        raise RowError("empty completion", "empty_text")
    # Duplicates are judged on the row's own values, not on the template text every row shares.
    used = template_fields(fmt.prompt_template or "") + template_fields(fmt.completion_template)
    meta: dict[str, Any] = {"content": "\n".join(str(values.get(k, "")) for k in dict.fromkeys(used))}
    if label:
        meta["label"] = label
    return Chat([Message("user", prompt), Message("assistant", completion)], meta=meta)


def _labeled(values: dict[str, Any], fmt: RowFormat) -> Labeled:
    pair = values.get("text_pair")
    if pair is not None and not isinstance(pair, str):
        raise RowError(f"field 'text_pair': expected a string, got {type(pair).__name__}", "wrong_type")
    return Labeled(_text(values, "text"), _label(values, "label", fmt), pair)


def _tagged(values: dict[str, Any], fmt: RowFormat) -> Tagged:
    tokens, tags = _get(values, "tokens"), _get(values, "tags")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise RowError("field 'tokens': expected a list of strings", "wrong_type")
    if not isinstance(tags, list) or not all(isinstance(t, str | int) for t in tags):
        raise RowError("field 'tags': expected a list of tags", "wrong_type")
    if not tokens:
        raise RowError("field 'tokens': empty", "empty_text")
    if len(tokens) != len(tags):
        raise RowError(f"{len(tokens)} tokens but {len(tags)} tags", "wrong_type")
    return Tagged(tokens, [str(t) for t in tags])


def _pair(values: dict[str, Any], fmt: RowFormat) -> Pair:
    targets = [t for t in _text_or_list(values, "target") if t.strip()]
    return Pair(" ".join(_text_or_list(values, "source")), targets[0], references=targets if len(targets) > 1 else [])


def _squad(values: dict[str, Any], fmt: RowFormat) -> Pair:
    answers, starts = _get(values, "answers"), values.get("answer_starts")
    if isinstance(answers, dict):  # Hugging Face layout: {"text": [...], "answer_start": [...]}
        answers, starts = answers.get("text", []), answers.get("answer_start")
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
        raise RowError("field 'answers': expected a non-empty list of answer texts", "wrong_type")
    # Where each answer starts in the context (extractive QA trains on that span; it is found by search if absent).
    meta = {"answer_starts": list(starts)} if isinstance(starts, list) else {}
    return Pair(_text(values, "question"), answers[0], context=_text(values, "context"), references=answers, meta=meta)


def _preference(values: dict[str, Any], fmt: RowFormat) -> Preference:
    if "prompt" in values:
        prompt = _prompt_messages(values["prompt"], "prompt")
        return Preference(
            prompt, _reply(_get(values, "chosen"), "chosen"), _reply(_get(values, "rejected"), "rejected")
        )
    # Anthropic HH-RLHF: two whole transcripts that share everything up to the final "Assistant:" turn.
    # The cut is the last marker inside their common prefix: replies can themselves contain the marker.
    chosen, rejected = _text(values, "chosen"), _text(values, "rejected")
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


def transcript_messages(text: str) -> list[Message]:
    """``\\n\\nHuman: ...\\n\\nAssistant: ...`` as messages."""
    messages: list[Message] = []
    for chunk in text.split("\n\n"):
        for prefix, role in (("Human:", "user"), ("Assistant:", "assistant")):
            if chunk.startswith(prefix):
                messages.append(Message(role, chunk[len(prefix) :].strip()))
                break
        else:
            if messages:  # a paragraph break inside a turn
                messages[-1].content += "\n\n" + chunk
    if not messages:
        raise RowError("the transcript has no 'Human:' turn", "missing_field")
    return messages


def _openai_preference(values: dict[str, Any], fmt: RowFormat) -> Preference:
    return Preference(
        _prompt_messages(_get(values, "input"), "input"),
        _reply(_get(values, "preferred_output"), "preferred_output"),
        _reply(_get(values, "non_preferred_output"), "non_preferred_output"),
    )


def _feedback(values: dict[str, Any], fmt: RowFormat) -> Feedback:
    raw = _get(values, "label")
    label = {"true": True, "1": True, "false": False, "0": False}.get(str(raw).strip().lower())
    if label is None:
        raise RowError(f"field 'label': expected true or false, got {raw!r}", "unknown_label")
    prompt = _prompt_messages(_get(values, "prompt"), "prompt")
    return Feedback(prompt, _reply(_get(values, "completion"), "completion"), label)


def _raw_text(values: dict[str, Any], fmt: RowFormat) -> Text:
    return Text(_text(values, "text"))


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
