"""Pydantic validation errors rewritten as messages a user can act on ("key: expected ..., got ...")."""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel

from tunesmith.core.config.run import RunConfig

# The tags pydantic puts in the location of an error inside a tagged union (a grader's type, a gate check's kind).
UNION_TAGS = frozenset(
    {"string_check", "text_similarity", "python", "score_model", "label_model", "multi"}
    | {"delta", "score", "forgetting", "bias_flips", "memorisation", "factual_drift"}
)


def describe_error(err: dict[str, Any]) -> str:
    loc = [str(p) for p in err["loc"]]
    loc = [p for i, p in enumerate(loc) if not (p in UNION_TAGS and 0 < i < len(loc) - 1 and loc[i - 1] != "eval")]
    key = ".".join(loc) or "config"
    kind = err["type"]
    if kind == "extra_forbidden":
        section_model, _ = _field_at(loc[:-1])
        known = list(section_model.model_fields) if section_model else []
        hint = difflib.get_close_matches(loc[-1], known, n=1)
        suggestion = f"; did you mean '{'.'.join([*loc[:-1], hint[0]])}'?" if hint else ""
        allowed = f" (allowed: {', '.join(known)})" if known and not hint else ""
        return f"{key}: unknown key{suggestion}{allowed}"
    if kind == "missing":
        return f"{key}: required but not set"
    if kind == "value_error":
        return str(err["msg"]).removeprefix("Value error, ")
    _, field = _field_at(loc)
    expected = _expected(field) if field is not None else None
    if kind == "literal_error" and expected is None:
        expected = str(err.get("ctx", {}).get("expected", ""))
    got = err.get("input")
    hint = ""
    if kind == "literal_error" and isinstance(got, str) and field is not None:
        choices = [str(v) for v in typing.get_args(field.annotation)]
        close = difflib.get_close_matches(got, choices, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"{key}: expected {expected or err['msg'].lower()}, got {got!r}{hint}"


def _field_at(loc: list[str]) -> tuple[type[BaseModel] | None, Any]:
    """Walk the schema along a location; return the section model there and the field info (if a field)."""
    model: type[BaseModel] | None = RunConfig
    field = None
    for part in loc:
        if model is None or part not in model.model_fields:
            return None, None
        field = model.model_fields[part]
        model = _section_type(field.annotation)
    return model, field


def _section_type(annotation: Any) -> type[BaseModel] | None:
    candidates = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _expected(field: Any) -> str:
    """Describe what a field accepts, e.g. 'a positive integer' or "one of 'full', 'lora'"."""
    annotation = field.annotation
    nullable = False
    if _is_union(annotation):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(annotation))
        annotation = args[0] if len(args) == 1 else annotation
    text = _describe_type(annotation, field.metadata)
    return f"{text} or null" if nullable else text


def _describe_type(annotation: Any, metadata: list[Any]) -> str:
    if typing.get_origin(annotation) is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(annotation))
    if _is_union(annotation):
        return " or ".join(_describe_type(a, []) for a in typing.get_args(annotation))
    if annotation is bool:
        return "true or false"
    if annotation in (int, float):
        noun = "integer" if annotation is int else "number"
        lower = next((m for m in metadata if isinstance(m, annotated_types.Gt | annotated_types.Ge)), None)
        upper = next((m for m in metadata if isinstance(m, annotated_types.Lt | annotated_types.Le)), None)
        if lower is not None and upper is not None:
            return f"a {noun} from {_bound(lower)} to {_bound(upper)}"
        if isinstance(lower, annotated_types.Gt) and lower.gt == 0:
            return f"a positive {noun}"
        if isinstance(lower, annotated_types.Ge) and lower.ge == 0:
            return f"a non-negative {noun}"
        return f"an {noun}" if annotation is int else f"a {noun}"
    if annotation is str:
        return "a string"
    origin = typing.get_origin(annotation)
    if origin is list:
        return "a list"
    if origin is dict:
        return "a mapping"
    return getattr(annotation, "__name__", str(annotation))


def _bound(m: Any) -> str:
    for attr, word in (("gt", "above "), ("ge", ""), ("lt", "below "), ("le", "")):
        if hasattr(m, attr):
            return f"{word}{getattr(m, attr)}"
    return str(m)
