"""The New run form, generated from the config schema (the pydantic models' fields): every section and setting with
its default and description; settings sections shown only for the task or method that reads them; only the methods a
task's recipe supports offered. Values come back as a flat ``{"training.learning_rate": 1e-4, ...}`` and are
checked by the CLI's own validation (``validate_config`` and the recipe check a run makes before it starts)."""

from __future__ import annotations

import functools
import types
import typing
from typing import Any, Literal

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from tunesmith.core.config import METHOD_SECTIONS, TASK_SECTIONS, ConfigError, RunConfig, validate_config

SECTIONS = ("model", "data", "task", "method", "training", "eval", "output")
LEFT_OUT = {"stages", "data.mix"}  # sequential runs and multi-task mixes: written in YAML, loaded from a file
PATH_KEYS = ("data.train", "data.validation", "data.test", "model.from_run", "eval.reward_model")


def _plain(annotation: Any) -> tuple[list[Any], bool]:
    """The annotation's member types without None, and whether None is allowed."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return members, len(members) < len(typing.get_args(annotation))
    return [annotation], False


def _kind(annotation: Any) -> tuple[str, list[Any] | None]:
    """How a field is edited: bool | integer | number | text | choice (with its choices) | yaml."""
    members, _ = _plain(annotation)
    if len(members) == 1 and typing.get_origin(members[0]) is Literal:
        return "choice", list(typing.get_args(members[0]))
    simple = {bool: "bool", int: "integer", float: "number", str: "text"}
    kinds = [simple.get(m) for m in members]
    if len(kinds) == 1 and kinds[0]:
        return kinds[0], None
    if "text" in kinds and all(
        k == "text" or (isinstance(m, type) and issubclass(m, BaseModel)) for k, m in zip(kinds, members, strict=True)
    ):
        return "text", None  # a path, or {source, target} parallel files (written in YAML)
    return "yaml", None


def _default(info: FieldInfo) -> Any:
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    elif info.default is PydanticUndefined:
        return None
    else:
        value = info.default
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def _section_model(annotation: Any) -> type[BaseModel] | None:
    members, _ = _plain(annotation)
    if len(members) == 1 and isinstance(members[0], type) and issubclass(members[0], BaseModel):
        return members[0]
    return None


def _fields(model: type[BaseModel], prefix: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name, info in model.model_fields.items():
        key = f"{prefix}.{name}"
        if key in LEFT_OUT:
            continue
        nested = _section_model(info.annotation)
        if nested is not None:  # a settings sub-section (task.preference, method.lora, data.clean): a group
            out.append({"key": key, "group": True, "title": name, "description": info.description or "",
                        "fields": _fields(nested, key), **_shown_for(key)})  # fmt: skip
            continue
        kind, choices = _kind(info.annotation)
        default = _default(info)
        _, nullable = _plain(info.annotation)
        field = {"key": key, "name": name, "kind": kind, "choices": choices, "default": default,
                 "nullable": nullable, "required": info.is_required(), "description": info.description or "",
                 "path": key in PATH_KEYS}  # fmt: skip
        if kind == "yaml":
            field["default_text"] = "" if default in (None, [], {}) else yaml.safe_dump(default).strip()
        out.append(field)
    return out


def _shown_for(key: str) -> dict[str, Any]:
    """A task's or a method's settings group: shown only while that task or method is chosen."""
    section, _, name = key.partition(".")
    if section == "task" and name in TASK_SECTIONS:
        return {"tasks": list(TASK_SECTIONS[name])}
    if section == "method":
        return {"methods": sorted(m for m, used in METHOD_SECTIONS.items() if name in used)}
    return {}


@functools.lru_cache(maxsize=1)
def form() -> dict[str, Any]:
    """The whole form: sections of fields and groups, and the methods each task supports."""
    from tunesmith.core.config import MethodName
    from tunesmith.recipes import task_recipes

    sections = []
    for name in SECTIONS:
        info = RunConfig.model_fields[name]
        model = _section_model(info.annotation)
        assert model is not None
        sections.append({"name": name, "description": (model.__doc__ or "").strip(), "fields": _fields(model, name)})
    every = list(typing.get_args(MethodName))
    methods = {task: list(recipe.methods or every) for task, recipe in task_recipes().items()}
    return {"sections": sections, "task_methods": methods}


def nest(values: dict[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}``; YAML fields arrive as text and are parsed here."""
    yaml_keys = {f["key"] for s in form()["sections"] for f in _leaves(s["fields"]) if f["kind"] == "yaml"}
    raw: dict[str, Any] = {}
    for key, value in values.items():
        if key in yaml_keys and isinstance(value, str):
            try:
                value = yaml.safe_load(value) if value.strip() else None
            except yaml.YAMLError as exc:
                raise ConfigError(f"config: invalid configuration\n  - {key}: not valid YAML: {exc}") from None
            if value is None:
                continue
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return raw


def flatten(raw: dict[str, Any]) -> dict[str, Any]:
    """A config dict as the form's values (the inverse of ``nest``; YAML fields as YAML text)."""
    kinds = {f["key"]: f["kind"] for s in form()["sections"] for f in _leaves(s["fields"])}
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        for key, value in node.items():
            full = f"{prefix}.{key}" if prefix else str(key)
            if kinds.get(full) == "yaml":
                out[full] = yaml.safe_dump(value).strip() if value not in (None, [], {}) else ""
            elif isinstance(value, dict) and full not in kinds:
                walk(value, full)
            else:
                out[full] = value

    walk(raw, "")
    return out


def _leaves(fields: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [leaf for f in fields for leaf in (_leaves(f["fields"]) if f.get("group") else [f])]


def check(raw: dict[str, Any]) -> RunConfig:
    """The CLI's checks of a config before a run starts: the schema, then the task's recipe (methods, loop)."""
    from tunesmith.pipeline.trained import check_recipe
    from tunesmith.recipes import get_recipe

    output = raw.get("output") or {}
    output = {"dir": output.get("dir") or "runs", "name": output.get("name") or "studio"}  # a job sets its own
    config = validate_config({**raw, "output": output})
    if not config.multihead:
        check_recipe(get_recipe(config.task.name, config), config)
    return config


def problems(exc: Exception) -> list[dict[str, str]]:
    """The message's ``  - key: problem`` lines, by key (the form marks those fields); else the whole message."""
    found = []
    for line in str(exc).splitlines():
        stripped = line.strip()
        if stripped.startswith("- ") and ": " in stripped:
            key, _, message = stripped[2:].partition(": ")
            found.append({"key": key.strip(), "message": message})
    if not found:
        key = str(exc).split(" ", 1)[0].split(":")[0].split(",")[0]
        found.append({"key": key if "." in key else "", "message": str(exc)})
    return found
