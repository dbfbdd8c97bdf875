"""The objective of a sweep: one trial run as an ordinary tunesmith run with the trial's values, reported to the
pruner as it trains and judged on validation data.
"""

from __future__ import annotations

import copy
import gc
import math
from typing import Any

from tunesmith.core.config import validate_config
from tunesmith.core.console import console
from tunesmith.core.errors import ConfigError, TunesmithError
from tunesmith.sweep.load import Sweep
from tunesmith.sweep.space import format_value, set_key
from tunesmith.sweep.study import worker_name


# The leading underscore is part of what users see: Optuna logs a failed trial's exception by its repr.
class _TrialFailed(Exception):
    """A trial that cannot finish (diverged training, no target tokens): recorded as failed, the sweep goes on."""


class _Surplus(Exception):
    """A trial another worker made unnecessary by starting one at the same moment: recorded as failed, not run."""


CLAIMED = ("COMPLETE", "PRUNED", "RUNNING", "WAITING")


class Objective:
    """One trial: a run with the trial's values, judged on validation data, pruned from its validation loss.

    ``target`` is the number of finished trials the study should reach; ``started`` counts the trials this
    process really ran."""

    def __init__(self, sweep: Sweep, target: int) -> None:
        self.sweep = sweep
        self.target = target
        self.started = 0

    def __call__(self, trial: Any) -> float:
        import optuna

        from tunesmith.pipeline.run import Run

        sweep = self.sweep
        trial.set_user_attr("worker", worker_name())
        claimed = sum(
            t.number < trial.number for t in trial.study.get_trials(deepcopy=False) if t.state.name in CLAIMED
        )
        if claimed >= self.target:
            # Workers check the study before asking for a trial, but two may ask at once; trial numbers order them,
            # so exactly the later one steps back.
            trial.set_user_attr("failure", f"not run: {self.target} trials were already finished or running")
            raise _Surplus(f"the study already has {self.target} trials")
        self.started += 1
        values = {p.key: p.suggest(trial) for p in sweep.params}
        raw = copy.deepcopy(sweep.base)
        for key, value in values.items():
            set_key(raw, key, value)
        name = f"trial-{trial.number:03d}"
        raw["output"] = {"dir": str(sweep.dir / "trials"), "name": name}
        raw.setdefault("eval", {})["enabled"] = False  # the test split is for the final run, never for choosing
        run = Run(validate_config(raw, source=f"trial {trial.number}"))
        trial.set_user_attr("run_dir", str(run.dir.root))
        shown = ", ".join(f"{k}={format_value(v)}" for k, v in values.items())
        console.print(f"[bold]trial {trial.number}[/]: {shown}")
        sign = -1.0 if sweep.direction == "maximize" else 1.0

        def report(step: int, val_loss: float) -> None:
            # The pruner compares intermediate values only with each other, so a validation loss (negated when the
            # objective is maximised) is a fair early signal even for an accuracy objective.
            trial.report(sign * val_loss, step)
            trial.set_user_attr("last_step", step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation loss {val_loss:.4f} at step {step} is worse than the median")

        run.open(force=True)
        try:
            run.prepare()
            run.train(on_eval=report)
        except optuna.TrialPruned as exc:
            console.print(f"  [yellow]pruned[/]: {exc}")
            raise
        except TunesmithError as exc:
            trial.set_user_attr("failure", str(exc).splitlines()[0])
            console.print(f"  [red]failed[/]: {exc}")
            raise _TrialFailed(str(exc)) from exc
        finally:
            gc.collect()
        value = self._value(run)
        if not math.isfinite(value):
            trial.set_user_attr("failure", f"{sweep.settings.metric} is {value}")
            raise _TrialFailed(f"{sweep.settings.metric} is {value}")
        console.print(f"  {sweep.settings.metric} = {value:.4f}")
        return value

    def _value(self, run: Any) -> float:
        metric = self.sweep.settings.metric
        if metric == "val_loss":
            val = run.dir.read_state()["stages"]["train"].get("val_loss")
            return float("nan") if val is None else float(val)
        tuned = run.evaluate_split("validation")["tuned"]
        if metric not in tuned:
            raise ConfigError(
                f"sweep.metric '{metric}' is not a metric of this task; the validation evaluation gives: "
                f"val_loss, {', '.join(tuned)}"
            )
        return float(tuned[metric])
