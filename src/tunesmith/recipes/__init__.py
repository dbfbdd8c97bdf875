"""Task recipes. Each is a module with encode / collate / count_targets / loss / predict / score."""

from __future__ import annotations

from types import ModuleType

from tunesmith.errors import ConfigError


def get_recipe(name: str) -> ModuleType:
    if name == "sft":
        from tunesmith.recipes import sft

        return sft
    raise ConfigError(f"task.name: unknown recipe {name!r}; available: sft")
