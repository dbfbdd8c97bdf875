"""``--workers N``: N worker processes on this machine share one study (each runs ``loop.work``); the parent only
starts them, waits for them, and then writes the results once.
"""

from __future__ import annotations

import multiprocessing
import sys

from rich.markup import escape

from tunesmith.core.console import console
from tunesmith.core.errors import TunesmithError
from tunesmith.sweep.load import Sweep
from tunesmith.sweep.loop import work
from tunesmith.sweep.study import open_study


def spawn_workers(sweep: Sweep, trials: int, storage: str, workers: int) -> list[str]:
    """Start ``workers`` processes on the study in ``storage`` and wait for all; the ones that failed, described."""
    # spawn, not fork: a forked copy of a process that has imported torch (threads, open database connections)
    # is not safe to use.
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_worker, args=(sweep, trials, storage), name=f"sweep-worker-{i}") for i in range(workers)
    ]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:  # Ctrl-C reached the workers too (same process group): let them mark their trials
        for process in processes:
            process.join()
        raise
    return [
        f"worker {i} (pid {p.pid}) ended with exit code {p.exitcode}" for i, p in enumerate(processes) if p.exitcode
    ]


def _worker(sweep: Sweep, trials: int, storage: str) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        work(sweep, open_study(sweep, storage), trials)
    except TunesmithError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
