"""Records as chats, for recipes that train on conversations (sft)."""

from __future__ import annotations

from tunesmith.data.formats import RowError
from tunesmith.data.records import Chat, Feedback, Labeled, Message, Pair, Preference, Record


def to_chat(record: Record, label_names: dict[str, str] | None = None, system_prompt: str | None = None) -> Chat:
    """The record as a user -> assistant conversation; raise RowError for records a chat cannot express."""
    label_names = label_names or {}
    if isinstance(record, Chat):
        messages = list(record.messages)
    elif isinstance(record, Labeled):
        prompt = f"{record.text}\n\n{record.text_pair}" if record.text_pair else record.text
        messages = [Message("user", prompt), Message("assistant", label_names.get(record.label, record.label))]
    elif isinstance(record, Pair):
        prompt = f"{record.context}\n\n{record.source_text}" if record.context else record.source_text
        messages = [Message("user", prompt), Message("assistant", record.target)]
    elif isinstance(record, Preference):
        messages = [*record.prompt, Message("assistant", record.chosen)]
    elif isinstance(record, Feedback):
        if not record.label:
            raise RowError("completion is marked undesirable (label false); sft learns only from good ones", "filtered")
        messages = [*record.prompt, Message("assistant", record.completion)]
    else:
        raise RowError(f"a {type(record).__name__} record has no assistant reply for sft to learn from", "wrong_type")
    if system_prompt and messages[0].role != "system":
        messages.insert(0, Message("system", system_prompt))
    meta = dict(record.meta)
    if isinstance(record, Labeled):
        meta["label"] = record.label
    return Chat(messages, source=record.source, meta=meta, tools=record.tools if isinstance(record, Chat) else None)
