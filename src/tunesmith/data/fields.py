"""What the per-format parsers share: ``RowFormat`` (how rows of a file become records), ``RowError`` (why one
cannot) and the readers of a row's fields as typed values (text, text lists, labels, template fields, dotted paths
into nested values).
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tunesmith.core.errors import DataError

MISSING = object()


class RowError(ValueError):
    """One row cannot become a record; ``kind`` names the problem, the message says which field and why."""

    def __init__(self, message: str, kind: str = "invalid_row", field: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.field = field  # the canonical field it is about, when one is


@dataclass
class RowFormat:
    """How rows of one file become records."""

    kind: str
    prompt_template: str | None = None
    completion_template: str = "{completion}"
    label_column: str = "label"
    label_names: dict[str, str] = field(default_factory=dict)
    columns: dict[str, str] = field(default_factory=dict)  # canonical name -> the file's column (or dotted path)
    text_template: str | None = None  # task heads: the input text built from several columns
    tag_scheme: str | None = None  # tagged rows: the files' chunk scheme (IOB1, BIO, BIOES), converted to BIO


def template_fields(template: str) -> list[str]:
    """The fields a format string names, as written (``title``, ``review.body``)."""
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name]
    except ValueError as exc:
        raise DataError(f"invalid template {template!r}: {exc}") from None


def column_root(name: str) -> str:
    """The top-level column a field name or dotted path reads (``review.body`` -> ``review``)."""
    return re.split(r"[.\[]", name, maxsplit=1)[0]


def lookup(values: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path (``review.body``, ``answers.0``) in nested objects and lists, or ``MISSING``."""
    if path in values:
        return values[path]
    value: Any = values
    for part in path.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, Sequence) and not isinstance(value, str) and part.lstrip("-").isdigit():
            index = int(part)
            if not -len(value) <= index < len(value):
                return MISSING
            value = value[index]
        else:
            return MISSING
    return value


class _Fields(string.Formatter):
    """``str.format`` whose field names may be dotted paths into nested values; a missing or null field fails."""

    def get_field(self, field_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        value = kwargs.get(field_name, MISSING) if field_name in kwargs else lookup(kwargs, field_name)
        if value is MISSING and "[" in field_name:
            value = super().get_field(field_name, args, kwargs)[0]
        if value is MISSING or value is None:
            raise RowError(f"missing field '{field_name}'", "missing_field", column_root(field_name))
        return value, field_name


def render_template(template: str, values: Mapping[str, Any]) -> str:
    """``template`` filled from a row's values (dotted paths allowed); ``RowError`` names a missing field."""
    try:
        return _Fields().vformat(template, (), values)
    except (KeyError, IndexError, TypeError) as exc:
        raise RowError(f"missing field {exc}", "missing_field") from None


def field_value(values: dict[str, Any], key: str) -> Any:
    if key not in values or values[key] is None:
        raise RowError(f"missing field '{key}'", "missing_field", key)
    return values[key]


def field_text(values: dict[str, Any], key: str, allow_empty: bool = False) -> str:
    value = field_value(values, key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise RowError(f"field '{key}': expected a string, got {type(value).__name__}", "wrong_type")
    if not allow_empty and not value.strip():
        raise RowError(f"field '{key}': empty text", "empty_text")
    return value


def field_texts(values: dict[str, Any], key: str) -> list[str]:
    """A string, or a list of strings (SciTLDR keeps sentences and references as lists)."""
    value = field_value(values, key)
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) for v in items):
        raise RowError(f"field '{key}': expected a string or a list of strings", "wrong_type")
    if not any(v.strip() for v in items):
        raise RowError(f"field '{key}': empty text", "empty_text")
    return items


def field_label(values: dict[str, Any], key: str, fmt: RowFormat) -> str:
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
