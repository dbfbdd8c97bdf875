"""One worker's share of a sweep: run trials until the study has the target number of finished trials and none
running, whoever ran them. Every worker of a shared study (a process, or a machine) runs this same loop.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

from tunesmith.core.console import console
from tunesmith.core.progress import Progress
from tunesmith.sweep.load import Sweep
from tunesmith.sweep.objective import Objective, _Surplus, _TrialFailed
from tunesmith.sweep.results import write_results

FINISHED = ("COMPLETE", "PRUNED")


def work(sweep: Sweep, study: Any, target: int) -> None:
    """Run trials until ``study`` has ``target`` finished (complete or pruned) ones and no trial is running.

    While the trials still needed are all running on other workers, this worker waits for them rather than
    ending: one of them may fail (a worker killed is noticed by its missing heartbeat) and need a replacement,
    and the best trial can only be chosen once all have ended. Each worker starts at most as many trials as were
    missing when it began, so a sweep whose trials all fail ends (as a single process always did).
    """
    import optuna

    objective = Objective(sweep, target)
    done = _count(study)[0]
    budget = target - done
    waiting = False
    # A line per finished trial (each trial shows its own progress): count, time per trial and ETA.
    progress = Progress(budget, "sweep", unit="trials", lines=True)
    while True:
        _fail_stale(study)
        finished, running = _count(study)
        if finished - done > progress.count:  # trials finished since the last look, by any worker
            progress.advance(finished - done - progress.count)
        enough = finished + running >= target or objective.started >= budget
        if enough and not running:
            return
        if enough:
            if not waiting:
                console.print(f"[bold]sweep[/]: waiting for {running} trial(s) running on other workers")
            waiting = True
            time.sleep(sweep.settings.heartbeat_interval)
            continue
        waiting = False
        try:
            study.optimize(
                objective,
                n_trials=1,
                catch=(_TrialFailed, _Surplus),
                callbacks=[lambda s, _t: write_results(sweep, s)],
                gc_after_trial=True,
            )
        except optuna.exceptions.UpdateFinishedTrialError:
            console.print(
                "  [yellow]another worker failed this trial[/]: its heartbeat did not reach the database for "
                f"{sweep.settings.grace_period} s, so its result is discarded"
            )


def _count(study: Any) -> tuple[int, int]:
    """(finished, running) trials of the study, all workers'."""
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    return sum(s in FINISHED for s in states), states.count("RUNNING")


def _fail_stale(study: Any) -> None:
    """Fail the running trials whose worker stopped beating (shared storage only; Optuna queues their retry)."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
