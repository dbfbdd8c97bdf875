"""The Optuna study of a sweep: opened in its storage (``storage``), with its sampler and pruner; the lock that
keeps one process per local sweep, and the resumption of trials a killed local sweep left running.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tunesmith.core.config import SweepConfig
from tunesmith.core.console import console
from tunesmith.core.errors import TunesmithError
from tunesmith.sweep.load import Sweep
from tunesmith.sweep.storage import check_connection, open_storage, setup_lock, storage_url


def open_study(sweep: Sweep, storage: str | None) -> Any:
    """The sweep's study (created on first use): in SQLite in the sweep folder, or in the shared ``storage``."""
    import optuna

    url = storage_url(storage, sweep.dir)
    shared = storage is not None
    seed = sweep.settings.seed
    if shared:
        check_connection(url)
        # Workers seeded alike would draw the same values: each has its own seed, derived from sweep.seed.
        seed = zlib.crc32(f"{seed}:{worker_name()}".encode())
    sampler = (
        optuna.samplers.RandomSampler(seed=seed)
        if sweep.settings.sampler == "random"
        else optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, len(sweep.params) + 1)))
    )
    with setup_lock(url):
        study = optuna.create_study(
            storage=open_storage(url, sweep.settings, shared),
            study_name=sweep.name,
            direction=sweep.direction,
            sampler=sampler,
            pruner=_pruner(sweep.settings),
            load_if_exists=True,
        )
        if not study.trials and sweep.settings.enqueue:
            for fixed in sweep.settings.enqueue:
                study.enqueue_trial(fixed)
    return study


def worker_name() -> str:
    """This process as a worker of a study: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _pruner(settings: SweepConfig) -> Any:
    import optuna

    if settings.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=settings.startup_trials, n_warmup_steps=settings.warmup_steps
        )
    if settings.pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def fail_interrupted(study: Any) -> None:
    """Trials a killed sweep left RUNNING: mark them failed and queue their values to be tried again."""
    import optuna

    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        # Optuna has no public call to fail another process's trial; its storage API is the documented way.
        study._storage.set_trial_user_attr(trial._trial_id, "failure", "interrupted (the sweep was stopped)")
        study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        folder = trial.user_attrs.get("run_dir")
        if folder:
            shutil.rmtree(folder, ignore_errors=True)
        console.print(f"  trial {trial.number} was interrupted; its values are tried again")


@contextlib.contextmanager
def lock(folder: Path, shared: bool) -> Iterator[None]:
    """One sweep process per directory with local SQLite (several are fine with a shared database)."""
    if shared:
        yield
        return
    with (folder / ".lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TunesmithError(
                f"{folder}: another `tunesmith sweep` is running on this directory.\n"
                "  fix: wait for it, or use --storage postgresql://... to let several processes share one study"
            ) from None
        yield
