"""Load a sweep: the run config and its search space (the config's ``sweep:`` section or a sweep file), all
checked before any trial runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tunesmith.core.config import SweepConfig, load_raw_config, validate_config
from tunesmith.core.errors import ConfigError
from tunesmith.sweep.space import Param, check_space, parse_space

STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass
class Sweep:
    name: str
    dir: Path
    base: dict[str, Any]  # the run config (validated, without its sweep section)
    settings: SweepConfig
    params: list[Param]

    @property
    def direction(self) -> str:
        if self.settings.direction:
            return self.settings.direction
        lower = self.settings.metric.lower()
        return "minimize" if "loss" in lower or "perplexity" in lower else "maximize"


def load_sweep(
    config: str | Path, space_file: str | Path | None = None, overrides: tuple[str, ...] = (), study: str | None = None
) -> Sweep:
    """The run config and its search space, all checked before any trial runs. ``study`` names the Optuna study
    and the sweep folder (default: the run's name)."""
    if study is not None and not STUDY_NAME.fullmatch(study):
        raise ConfigError(
            f"--study {study!r}: a study name is also its folder's name; use letters, digits, '.', '_' and '-'"
        )
    raw = load_raw_config(config, overrides)
    section = raw.pop("sweep", None)
    if space_file is not None:
        path = Path(space_file)
        if not path.is_file():
            raise ConfigError(f"sweep file not found: {path}")
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        section = loaded.get("sweep", loaded) if isinstance(loaded, dict) else loaded
        source = str(path)
    else:
        source = f"{config} (sweep section)"
    if section is None:
        raise ConfigError(
            f"{config}: no search space; add a `sweep:` section with `space:` (docs/iterate.md) or pass --space FILE"
        )
    try:
        settings = SweepConfig.model_validate(section)
    except ValidationError as exc:
        problems = "\n".join(
            f"  - {'.'.join(['sweep', *map(str, e['loc'])])}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise ConfigError(f"{source}: invalid sweep settings\n{problems}") from None
    run_config = validate_config(raw, source=str(config))
    params = parse_space(settings.space)
    check_space(raw, params)
    for i, fixed in enumerate(settings.enqueue):
        unknown = sorted(set(fixed) - {p.key for p in params})
        if unknown:
            raise ConfigError(f"sweep.enqueue[{i}]: {', '.join(unknown)} not in sweep.space")
    training = run_config.training
    has_validation = bool(run_config.data.validation) or run_config.data.validation_fraction > 0
    if not has_validation:
        raise ConfigError(
            f"{config}: a sweep is judged on validation data, and there is none.\n"
            "  fix: set data.validation (a file) or data.validation_fraction (e.g. 0.1)"
        )
    if settings.metric == "val_loss" and not training.eval_every:
        raise ConfigError(
            f"{config}: sweep.metric is val_loss, measured every training.eval_every steps, which is not set.\n"
            "  fix: set training.eval_every (e.g. a quarter of the steps); it also lets the pruner stop bad trials"
        )
    name = study or run_config.output.name or Path(config).stem
    return Sweep(name, Path(run_config.output.dir) / f"{name}-sweep", raw, settings, params)
