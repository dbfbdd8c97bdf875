"""Experiment trackers (TensorBoard, MLflow, W&B) that receive the loop's metric rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunesmith.core.config import TrainingConfig
from tunesmith.engine.task import TrainingError


class Trackers:
    """Experiment trackers fed through accelerate (TensorBoard, MLflow, W&B), on the main process only."""

    def __init__(self, cfg: TrainingConfig, metrics_path: Path | None, main: bool) -> None:
        self.trackers: list[Any] = []
        if not main or metrics_path is None:
            return
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS
        from accelerate.utils import is_mlflow_available, is_tensorboard_available, is_wandb_available

        available = {
            "tensorboard": is_tensorboard_available,
            "mlflow": is_mlflow_available,
            "wandb": is_wandb_available,
        }
        run_dir = metrics_path.parent
        for name in cfg.trackers:
            if not available[name]():
                raise TrainingError(f"training.trackers: {name} is not installed (pip install {name}), or remove it")
            if name == "tensorboard":
                tracker = LOGGER_TYPE_TO_CLASS[name]("tensorboard", logging_dir=str(run_dir))
            elif name == "mlflow":
                tracker = LOGGER_TYPE_TO_CLASS[name](run_dir.name, logging_dir=str(run_dir / "mlruns"))
            else:
                tracker = LOGGER_TYPE_TO_CLASS[name](run_dir.name)
            tracker.start()
            tracker.store_init_configuration(cfg.model_dump(mode="json"))
            self.trackers.append(tracker)

    def log(self, row: dict[str, Any]) -> None:
        values = {f"train/{k}": v for k, v in row.items() if isinstance(v, int | float) and k != "step"}
        for tracker in self.trackers:
            tracker.log(values, step=row["step"])

    def finish(self) -> None:
        for tracker in self.trackers:
            tracker.finish()
