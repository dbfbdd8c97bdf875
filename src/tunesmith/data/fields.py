"""What the per-format parsers share: ``RowFormat`` (how rows of a file become records), ``RowError`` (why one
cannot) and the readers of a row's fields as typed values (text, text lists, labels, template fields).
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any

from tunesmith.core.errors import DataError


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


def template_fields(template: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name]
    except ValueError as exc:
        raise DataError(f"invalid template {template!r}: {exc}") from None


def field_value(values: dict[str, Any], key: str) -> Any:
    if key not in values or values[key] is None:
        raise RowError(f"missing field '{key}'", "missing_field")
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
