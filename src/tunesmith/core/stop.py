"""A request to stop training at the next step with a checkpoint: SIGUSR1, which a job's pause sends to its run.

The training loop polls ``requested()`` after each optimizer step; a process that never installed the handler
(no training loop) keeps SIGUSR1's default action and ends.
"""

from __future__ import annotations

import signal
import threading

_requested = threading.Event()


def install() -> None:
    """Catch SIGUSR1 in this process (only the main thread may install a handler; elsewhere this does nothing)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGUSR1, lambda _signum, _frame: _requested.set())


def requested() -> bool:
    return _requested.is_set()
