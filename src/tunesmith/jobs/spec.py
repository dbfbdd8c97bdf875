"""A fine-tuning job request (OpenAI's shape, or a tunesmith config) checked and turned into a run config.

What "auto" picks (docs/jobs.md): ``n_epochs`` 3, raised so a small file is seen at least 100 times in all (at most
10 epochs) and lowered so a large one is not seen more than 25,000 rows in all (at least 1); ``batch_size`` about
1% of the rows, a power of two from 1 to 32 (small files get small batches, so they still take several steps);
``learning_rate_multiplier`` 1, on LoRA's usual 2e-4; ``beta`` 0.1 (the DPO paper's value).
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.core.errors import ConfigError

BASE_LEARNING_RATE = 2e-4  # LoRA's usual rate; learning_rate_multiplier scales it
LIMITS: dict[str, tuple[type, float, float]] = {  # name -> (type, lowest, highest)
    "n_epochs": (int, 1, 50),
    "batch_size": (int, 1, 256),
    "learning_rate_multiplier": (float, 1e-6, 100.0),
    "beta": (float, 1e-6, 2.0),
}
ACCEPTED = {  # hyperparameters each method takes; OpenAI's reinforcement-only knobs are accepted, recorded, unused
    "supervised": ("n_epochs", "batch_size", "learning_rate_multiplier"),
    "dpo": ("n_epochs", "batch_size", "learning_rate_multiplier", "beta"),
    "reinforcement": (
        "n_epochs",
        "batch_size",
        "learning_rate_multiplier",
        "compute_multiplier",
        "eval_interval",
        "eval_samples",
        "reasoning_effort",
    ),
}
TASKS = {"supervised": "sft", "dpo": "dpo", "reinforcement": "grpo"}


class JobRequestError(Exception):
    """A request the client must fix; ``param`` names the field (OpenAI's error ``param``)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param = message, param


@dataclass
class JobSpec:
    """What a job row stores: OpenAI's method object (values resolved), its hyperparameters, the run config."""

    method: dict[str, Any]
    hyperparameters: dict[str, Any]
    config: dict[str, Any]
    seed: int
    notes: list[str]


def build_spec(body: dict[str, Any], train: Path, valid: Path | None, rows: int) -> JobSpec:
    """Check a create-job body and build the run; ``rows``: usable rows of the training file (for "auto")."""
    seed = body.get("seed")
    if seed is None:
        seed = random.randrange(2**31)
    elif not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**31:
        raise JobRequestError(f"seed must be an integer from 0 to {2**31 - 1}, got {seed!r}", "seed")
    if body.get("config") is not None:
        return _config_spec(body, train, valid, seed)
    method_type, given, param, extra = _method(body)
    values, notes = _resolve(method_type, given, param, rows)
    config: dict[str, Any] = {
        "model": {"name": body["model"]},
        "data": {"train": str(train), **({"validation": str(valid)} if valid else {})},
        "task": {"name": TASKS[method_type]},
        "method": {"name": "lora"},
        "training": {
            "epochs": values["n_epochs"],
            "batch_size": values["batch_size"],
            "learning_rate": BASE_LEARNING_RATE * values["learning_rate_multiplier"],
            "seed": seed,
            "save_every": _save_every(rows, values),
            "keep_checkpoints": 6,  # every checkpoint of the job stays listed and on disk
            **({"eval_every": _save_every(rows, values)} if valid else {}),
        },
        "eval": {"enabled": False},
    }
    if method_type == "dpo":
        config["task"]["preference"] = {"beta": values["beta"]}
    if method_type == "reinforcement":
        grader = extra["grader"]
        config["task"]["rl"] = {"reward": [f"grader:{grader['name']}"]}
        config["eval"]["graders"] = [grader]
    method = {"type": method_type, method_type: {"hyperparameters": values, **extra}}
    _check_config(config, "method")
    return JobSpec(method, values, config, seed, notes)


def _method(body: dict[str, Any]) -> tuple[str, dict[str, Any], str, dict[str, Any]]:
    """(type, hyperparameters as given, their param path, other method fields)."""
    method = body.get("method")
    legacy = body.get("hyperparameters")
    if method is None:
        if legacy is not None and not isinstance(legacy, dict):
            raise JobRequestError("hyperparameters must be an object", "hyperparameters")
        return "supervised", dict(legacy or {}), "hyperparameters", {}
    if not isinstance(method, dict):
        raise JobRequestError("method must be an object with a type", "method")
    kind = method.get("type")
    if kind not in TASKS:
        raise JobRequestError(f"method.type must be one of {', '.join(TASKS)}, got {kind!r}", "method.type")
    settings = method.get(kind) or {}
    if not isinstance(settings, dict):
        raise JobRequestError(f"method.{kind} must be an object", f"method.{kind}")
    given = settings.get("hyperparameters") or legacy or {}
    if not isinstance(given, dict):
        raise JobRequestError("hyperparameters must be an object", f"method.{kind}.hyperparameters")
    extra: dict[str, Any] = {}
    if kind == "reinforcement":
        from tunesmith.core.config import parse_grader

        raw = settings.get("grader")
        if raw is None:
            raise JobRequestError("a reinforcement job needs a grader", "method.reinforcement.grader")
        try:
            grader = parse_grader(raw, "method.reinforcement.grader")
        except ConfigError as exc:
            raise JobRequestError(str(exc), "method.reinforcement.grader") from None
        extra["grader"] = grader.model_dump(mode="json", exclude_none=True)
    return kind, dict(given), f"method.{kind}.hyperparameters", extra


def _resolve(kind: str, given: dict[str, Any], param: str, rows: int) -> tuple[dict[str, Any], list[str]]:
    """Every hyperparameter checked, "auto" replaced by its value; notes on the accepted but unused ones."""
    unknown = sorted(set(given) - set(ACCEPTED[kind]))
    if unknown:
        allowed = ", ".join(ACCEPTED[kind])
        raise JobRequestError(f"{param}.{unknown[0]} is not a {kind} hyperparameter; use {allowed}", param)
    values: dict[str, Any] = {}
    notes = []
    for name in ACCEPTED[kind]:
        value = given.get(name, "auto")
        if name not in LIMITS:
            if value != "auto":
                notes.append(f"{name}={value!r} is accepted for OpenAI compatibility and has no effect here")
            continue
        values[name] = _checked(name, value, f"{param}.{name}")
    batch = values["batch_size"] if values["batch_size"] != "auto" else _auto_batch(rows)
    values["batch_size"] = batch
    if values["n_epochs"] == "auto":
        values["n_epochs"] = _auto_epochs(rows)
    if values["learning_rate_multiplier"] == "auto":
        values["learning_rate_multiplier"] = 1.0
    if values.get("beta") == "auto":
        values["beta"] = 0.1
    return values, notes


def _checked(name: str, value: Any, param: str) -> Any:
    kind, low, high = LIMITS[name]
    if value == "auto":
        return value
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if not numeric or (kind is int and not float(value).is_integer()):
        expected = "an integer" if kind is int else "a number"
        raise JobRequestError(f'{param} must be {expected} or "auto", got {value!r}', param)
    if not low <= value <= high or (kind is float and not math.isfinite(value)):
        raise JobRequestError(f"{param} must be between {low:g} and {high:g}, got {value!r}", param)
    return kind(value)


def _auto_batch(rows: int) -> int:
    return max(1, min(32, 2 ** round(math.log2(max(rows / 100, 1)))))


def _auto_epochs(rows: int) -> int:
    epochs = 3
    if rows * epochs < 100:
        epochs = min(10, math.ceil(100 / max(rows, 1)))
    if rows * epochs > 25_000:
        epochs = max(1, 25_000 // rows)
    return epochs


def _save_every(rows: int, values: dict[str, Any]) -> int:
    """About five checkpoints per job (what a restarted worker continues from; a pause saves its own)."""
    steps = math.ceil(rows / values["batch_size"]) * values["n_epochs"]
    return max(1, math.ceil(steps / 5))


def _config_spec(body: dict[str, Any], train: Path, valid: Path | None, seed: int) -> JobSpec:
    """A job given as a tunesmith run config (any task and method): the files and model come from the request."""
    config = body["config"]
    if not isinstance(config, dict):
        raise JobRequestError("config must be a tunesmith run config object", "config")
    if body.get("method") is not None or body.get("hyperparameters") is not None:
        raise JobRequestError("give either config or method/hyperparameters, not both", "config")
    config = {k: (dict(v) if isinstance(v, dict) else v) for k, v in config.items()}
    data = config.setdefault("data", {})
    for key in ("train", "validation", "test"):
        if key in data:
            raise JobRequestError(
                f"config.data.{key}: a job's data are its uploaded files; give training_file / validation_file",
                f"config.data.{key}",
            )
    for key in ("output", "stages", "sweep"):
        if key in config:
            raise JobRequestError(f"config.{key} is not accepted in a job (the worker sets it)", f"config.{key}")
    data["train"] = str(train)
    if valid:
        data["validation"] = str(valid)
    config.setdefault("model", {})["name"] = body["model"]
    training = config.setdefault("training", {})
    training.setdefault("seed", seed)
    training.setdefault("save_every", 10)
    config.setdefault("eval", {}).setdefault("enabled", False)
    _check_config(config, "config")
    kind = {"sft": "supervised", "dpo": "dpo", "grpo": "reinforcement"}.get(config.get("task", {}).get("name", "sft"))
    return JobSpec({"type": kind or "supervised"}, {}, config, training["seed"], [])


def _check_config(config: dict[str, Any], param: str) -> None:
    from tunesmith.core.config import validate_config

    try:
        validate_config({**config, "output": {"dir": "runs", "name": "check"}}, source=param)
    except ConfigError as exc:
        message = str(exc)
        found = re.search(r"^\s+- ([\w.]+):", message, re.MULTILINE)
        raise JobRequestError(message, f"{param}.{found.group(1)}" if found and param == "config" else param) from None
