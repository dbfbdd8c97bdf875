"""Hyperparameter search over any config key with Optuna (``tunesmith sweep CONFIG --trials N``).

The space is written in YAML (``training.learning_rate: loguniform(1e-5, 1e-3)``) and checked against the config
schema before any trial runs. Each trial is an ordinary run in ``<sweep dir>/trials/trial-NNN``; the engine reports
its validation loss every ``training.eval_every`` steps to Optuna's pruner, which stops bad trials early. The study
lives in SQLite in the sweep directory by default, so a killed sweep continues where it stopped; a PostgreSQL URL
(``--storage``) lets several workers, on one machine (``--workers N``) or several, share one study.

This module drives a sweep; the parts live in ``space`` (the search space), ``load`` (loading and checking a sweep),
``storage`` (the database: URL, connection check), ``study`` (the Optuna study: sampler, pruner, lock, resumption),
``loop`` (one worker's trials), ``spawn`` (``--workers N``), ``objective`` (one trial as a run), ``results`` (the
per-trial table), ``best`` (best.yaml and ``keep_models``) and ``report`` (report.html). Their public names are
importable from here too.
"""

from __future__ import annotations

from typing import Any

import yaml

from tunesmith.core.console import console
from tunesmith.core.errors import ConfigError, TunesmithError
from tunesmith.core.fs import write_json, write_text
from tunesmith.sweep.best import keep_best
from tunesmith.sweep.load import Sweep, load_sweep
from tunesmith.sweep.loop import FINISHED, work
from tunesmith.sweep.report import write_sweep_report
from tunesmith.sweep.results import print_results, trial_rows, write_results
from tunesmith.sweep.space import KINDS, Param, check_space, parse_space, set_key
from tunesmith.sweep.spawn import spawn_workers
from tunesmith.sweep.study import fail_interrupted, lock, open_study

__all__ = [
    "FINISHED",
    "KINDS",
    "Param",
    "Sweep",
    "check_space",
    "finish",
    "load_sweep",
    "parse_space",
    "print_results",
    "run_sweep",
    "set_key",
    "trial_rows",
    "write_results",
    "write_sweep_report",
]


def run_sweep(sweep: Sweep, trials: int, storage: str | None = None, workers: int = 1) -> dict[str, Any]:
    """Run trials until the study has ``trials`` finished (complete or pruned) ones; write the results.

    With the default SQLite storage a lock file keeps one process per sweep directory, so trials left RUNNING
    in the study belong to a killed process: they are marked failed and their values are tried again first.
    With ``storage`` (e.g. PostgreSQL, shared by machines) every worker runs this same function; Optuna's
    heartbeat fails the trials of a worker that died, and each worker returns once the study is done.
    ``workers`` > 1 starts that many worker processes here and writes the results once they all ended.
    """
    import optuna

    if workers > 1 and (storage is None or storage.startswith("sqlite")):
        raise ConfigError(
            f"--workers {workers}: several workers need a database server they can share; SQLite cannot be written "
            "by several processes at once.\n  fix: add --storage postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
        )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if storage is None:  # the study and its lock file live in the folder; a bad --storage URL leaves nothing behind
        sweep.dir.mkdir(parents=True, exist_ok=True)
    with lock(sweep.dir, shared=storage is not None):
        study = open_study(sweep, storage)
        write_text(
            sweep.dir / "sweep.yaml", yaml.dump({**sweep.base, "sweep": sweep.settings.model_dump()}, sort_keys=False)
        )
        if storage is None:
            fail_interrupted(study)
        done = sum(t.state.name in FINISHED for t in study.trials)
        if done:
            console.print(f"[bold]sweep[/]: {done} of {trials} trials already finished in {sweep.dir}; continuing")
        failed = []
        if workers > 1:
            failed = spawn_workers(sweep, trials, storage, workers)  # type: ignore[arg-type]  (checked above)
        else:
            work(sweep, study, trials)
        summary = finish(sweep, study)
    finished = sum(summary["trials"][s] for s in FINISHED)
    if failed and finished < trials:
        raise TunesmithError(
            f"sweep '{sweep.name}': {finished} of {trials} trials finished; {'; '.join(failed)}.\n"
            "  fix: see that worker's messages above, then rerun the same command to continue"
        )
    for line in failed:
        console.print(f"[yellow]warning[/]: {line}; the other workers finished the study")
    return summary


def finish(sweep: Sweep, study: Any) -> dict[str, Any]:
    """Results table, best config as a runnable YAML, the best model kept (others deleted), report.html."""
    import optuna

    rows = write_results(sweep, study)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    summary: dict[str, Any] = {
        "name": sweep.name,
        "metric": sweep.settings.metric,
        "direction": sweep.direction,
        "trials": {s: sum(r["state"] == s for r in rows) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")},
        "best": None,
    }
    if complete:
        summary["best"] = keep_best(sweep, study.best_trial, rows)
    summary["report"] = str(write_sweep_report(sweep, study, rows, summary))
    write_json(sweep.dir / "summary.json", summary)
    print_results(sweep, rows, summary)
    return summary
