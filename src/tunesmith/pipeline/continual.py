"""Continual learning: continue an earlier run's tuned model on new data (``tunesmith run CONFIG --from RUN``).

The earlier run's weights are the starting point: a LoRA (or other peft) adapter is loaded trainable and keeps
training (the same adapter, so the result is still one adapter on the same base); full and freeze runs start from
the saved weights. Replay (``data.replay`` / ``--replay``) mixes the earlier run's training rows into the new
training split. Forgetting is measured on the earlier run's test split: the new model's metrics there against the
earlier model's (``eval/forgetting_earlier.json``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tunesmith.core.config import RunConfig
from tunesmith.core.console import console
from tunesmith.core.errors import ConfigError
from tunesmith.core.fs import read_json, read_jsonl, write_json
from tunesmith.pipeline.evaluators import evaluator
from tunesmith.pipeline.trained import TrainedRun

CONTINUABLE = ("lora", "qlora", "ia3", "prefix", "prompt", "full", "freeze")


def earlier_run(config: RunConfig) -> TrainedRun:
    """The run named by ``model.from_run``, checked to be a finished run this config can continue."""
    earlier = TrainedRun.from_dir(Path(str(config.model.from_run)))
    old = earlier.config
    where = f"model.from_run={config.model.from_run}"
    if old.model.name != config.model.name:
        raise ConfigError(
            f"{where}: that run tuned '{old.model.name}', this config names '{config.model.name}'.\n"
            f"  fix: set model.name: {old.model.name} (continuing keeps the same base model)"
        )
    if old.task.name != config.task.name:
        raise ConfigError(f"{where}: that run's task is '{old.task.name}', this config's is '{config.task.name}'")
    if config.method.name not in CONTINUABLE:
        raise ConfigError(
            f"{where}: continuing a '{config.method.name}' run is not supported; use one of {', '.join(CONTINUABLE)}"
        )
    if old.method.model_dump(mode="json") != config.method.model_dump(mode="json"):
        raise ConfigError(
            f"{where}: the method settings differ from that run's ({old.method.model_dump(mode='json')}); training "
            "continues the same weights, so the method must be the same.\n  fix: copy the earlier run's method section"
        )
    return earlier


def replay_sources(config: RunConfig) -> list[Path]:
    """The earlier run's prepared training split, the pool replayed rows are drawn from."""
    path = Path(str(config.model.from_run)) / "data" / "train.jsonl"
    if not path.is_file():
        raise ConfigError(f"model.from_run={config.model.from_run}: no prepared training split to replay ({path})")
    return [path]


def continue_from(run: TrainedRun, base_model: Any) -> Any:
    """The model to train: the earlier run's tuned weights, trainable (``base_model`` is the loaded base)."""
    from tunesmith.models.adapt import PEFT_METHODS, apply_method, load_adapter, load_trained

    earlier = earlier_run(run.config)
    method = run.config.method
    if method.name in PEFT_METHODS:
        model = load_adapter(base_model, earlier.dir.model, is_trainable=True)
    else:
        weights = load_trained(earlier.config.method, earlier.dir.model, None, run.recipe.auto_class())
        model = apply_method(weights, method, task_type=run.recipe.peft_task_type)
    console.print(f"[bold]continue[/]: starting from {earlier.dir.model} ({method.name})")
    return model


def measure_forgetting(run: TrainedRun) -> dict[str, Any] | None:
    """Evaluate the new model on the earlier run's test split; compare with the earlier model's metrics there."""
    from tunesmith.data.records import record_from_dict

    earlier = earlier_run(run.config)
    test = earlier.dir.split("test")
    if not test.is_file():
        console.print(f"[yellow]forgetting: {earlier.dir.root} has no test split; not measured[/]")
        return None
    records = [record_from_dict(row) for row in read_jsonl(test)]
    console.print(f"[bold]forgetting[/]: the new model on {len(records)} test rows of {earlier.dir.root}")
    metrics = evaluator(run)(run, chats=records, out_dir=run.dir.root / "eval-earlier")
    previous_path = earlier.dir.eval / "metrics.json"
    previous = read_json(previous_path).get("tuned", {}) if previous_path.is_file() else {}
    now = metrics["tuned"]
    change = {
        k: now[k] - previous[k]
        for k in now
        if isinstance(now[k], int | float) and isinstance(previous.get(k), int | float) and math.isfinite(now[k])
    }
    result = {
        "earlier_run": str(earlier.dir.root),
        "rows": len(records),
        "earlier": previous,
        "now": now,
        "change": change,
        "note": "earlier: the earlier run's tuned model on its own test split (from its eval/metrics.json); "
        "now: this run's tuned model on the same rows",
    }
    write_json(run.dir.eval / "forgetting_earlier.json", result)
    shown = ", ".join(f"{k} {previous[k]:.4f} -> {now[k]:.4f} ({v:+.4f})" for k, v in change.items())
    console.print(f"  on the earlier run's test split: {shown or 'no earlier metrics to compare with'}")
    return result
