"""Reading a run YAML: data paths, ``--set`` overrides, validation and the config of each stage."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tunesmith.core.config.data import DATA_PATH_KEYS
from tunesmith.core.config.messages import describe_error
from tunesmith.core.config.run import STAGE_SECTIONS, RunConfig
from tunesmith.core.errors import ConfigError


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a run YAML, apply ``key.path=value`` overrides and validate; raise ConfigError on any problem.

    A ``sweep:`` section (read by ``tunesmith sweep``) is ignored here: a plain run uses the config's own values.
    """
    raw = load_raw_config(path, overrides)
    raw.pop("sweep", None)
    config = validate_config(raw, source=str(path))
    stage_configs(config, source=str(path))  # every stage must be valid before any stage runs
    return config


def stage_configs(config: RunConfig, source: str = "config") -> list[RunConfig]:
    """The full config of each stage: the shared sections with the stage's overrides (no stages of its own).

    A stage's ``data`` replaces the shared one (a stage trains on its own dataset), as does a ``method`` or
    ``task`` with a new name (the shared method's settings mean nothing to another method); ``training`` and
    ``eval`` overrides merge key by key.
    """
    shared = config.model_dump(mode="json", exclude={"stages"})
    configs = []
    for index, stage in enumerate(config.stages):
        raw = copy.deepcopy(shared)
        for section in STAGE_SECTIONS:
            override = getattr(stage, section)
            if override is None:
                continue
            renamed = override.get("name", raw[section].get("name")) != raw[section].get("name")
            if section == "data" or (section in ("method", "task") and renamed):
                raw[section] = copy.deepcopy(override)
            else:
                raw[section] = _deep_merge(raw[section], override)
        raw["output"] = {"dir": str(config.run_dir / "stages"), "name": f"{index + 1}-{stage.name}"}
        configs.append(validate_config(raw, source=f"{source}: stages[{index}] ({stage.name})"))
    return configs


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        nested = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _deep_merge(merged[key], value) if nested else value
    return merged


def load_raw_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """A run YAML as a plain dict, data paths made absolute, overrides applied and output.name set; unvalidated."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if raw is None:
        raise ConfigError(f"{path}: the config file is empty; it needs at least model.name and data.train")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (model, data, ...), got {type(raw).__name__}")
    _resolve_data_paths(raw, base=path.parent)
    for item in overrides:
        apply_override(raw, item)
    output = raw.setdefault("output", {})
    if isinstance(output, dict) and not output.get("name"):
        output["name"] = path.stem
    return raw


def validate_config(raw: dict[str, Any], source: str = "config") -> RunConfig:
    """Validate a plain dict against the schema, turning pydantic's errors into ones a user can act on."""
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        problems = [describe_error(err) for err in exc.errors()]
        raise ConfigError(f"{source}: invalid configuration\n" + "\n".join(f"  - {p}" for p in problems)) from None


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one ``a.b.c=value`` override in place; the value is parsed as YAML (so 16 is an int)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected key.path=value, e.g. --set training.learning_rate=1e-4")
    parts = key.strip().split(".")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise ConfigError(f"--set {item!r}: {where} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _resolve_data_paths(raw: dict[str, Any], base: Path) -> None:
    """Data paths written in a YAML file are relative to that file, so a config works from any directory."""
    for stage in raw.get("stages") or []:
        if isinstance(stage, dict):
            _resolve_data_paths(stage, base)
    evaluation = raw.get("eval")
    if isinstance(evaluation, dict) and isinstance(evaluation.get("graders"), str):  # a file of grader JSON
        evaluation["graders"] = str((base / evaluation["graders"]).resolve())
    data = raw.get("data")
    if not isinstance(data, dict):
        return
    for entry in data.get("mix") or []:
        if isinstance(entry, dict):
            _resolve_data_paths({"data": entry}, base)
    for key in DATA_PATH_KEYS:
        value = data.get(key)
        if isinstance(value, dict):  # parallel files: {source: ..., target: ...}
            for side in ("source", "target"):
                if isinstance(value.get(side), str) and value[side] and not Path(value[side]).is_absolute():
                    value[side] = str((base / value[side]).resolve())
        elif isinstance(value, str) and value and not value.startswith("hf:") and not Path(value).is_absolute():
            data[key] = str((base / value).resolve())
