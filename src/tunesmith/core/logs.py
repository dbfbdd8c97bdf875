"""Library output away from the terminal: transformers' load reports, DeepSpeed's accelerator notice, Python warnings
and every other library log record go to ``runs/<name>/logs/libraries.log`` (and to the terminal too with
``--debug``), so the terminal shows tunesmith's own lines and progress.

The ``tunesmith`` command turns this on for its duration (``quiet_libraries``); a run then names its folder
(``attach``). Records
from before that (model resolution, imports) are held and written when it does; a command without a run directory
(``data check``, ``data audit``) shows them only with ``--debug``. Used as a Python library, tunesmith leaves the
caller's logging alone: nothing here runs unless the command line asks.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

LOG_NAME = "libraries.log"
# Loggers whose records are the libraries' (they propagate to these names).
LIBRARIES = ("transformers", "peft", "accelerate", "datasets", "huggingface_hub", "torch", "optuna", "py.warnings")
# Loggers that add their own terminal handler whenever their package is imported (DeepSpeed's "Setting accelerator
# to CPU"): a filter on the logger itself stops a record before any handler sees it, whenever they were added.
SELF_HANDLED = ("DeepSpeed",)
PENDING_LIMIT = 10_000
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class LibraryLog(logging.Handler):
    """Writes library records to a run's log file; holds them until a run names its folder."""

    def __init__(self, echo: bool) -> None:
        super().__init__(logging.DEBUG)
        self.echo = echo
        self.pending: list[str] = []
        self.file: TextIO | None = None
        self.path: Path | None = None
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # a library's malformed record must not stop a run
            return
        if self.echo:
            sys.stderr.write(text + "\n")
        text = _ANSI.sub("", text)  # transformers colours its tables
        if self.file is not None:
            self.file.write(text + "\n")
            self.file.flush()
        elif len(self.pending) < PENDING_LIMIT:
            self.pending.append(text)

    def attach(self, folder: Path) -> None:
        path = Path(folder) / LOG_NAME
        if self.path == path and path.exists():
            return
        if self.file is not None:
            self.file.close()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file, self.path = path.open("a", encoding="utf-8"), path
        self.file.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} tunesmith {' '.join(sys.argv[1:])}\n")
        self.file.writelines(text + "\n" for text in self.pending)
        self.file.flush()
        self.pending.clear()


class _Divert(logging.Filter):
    def __init__(self, handler: LibraryLog) -> None:
        super().__init__()
        self.handler = handler

    def filter(self, record: logging.LogRecord) -> bool:
        self.handler.handle(record)
        return False  # the logger's own handlers never print it


_installed: LibraryLog | None = None
_transformers_routed = False


@contextlib.contextmanager
def quiet_libraries(debug: bool = False) -> Iterator[LibraryLog]:
    """While it lasts, library log records and Python warnings go to the run's log (also to stderr with ``debug``);
    on exit every logger is as it was (the command runs in-process in tests, too)."""
    global _installed, _transformers_routed
    if _installed is not None:
        yield _installed
        return
    handler = LibraryLog(echo=debug)
    saved = {name: logging.getLogger(name).propagate for name in (*LIBRARIES, "tunesmith")}
    own = logging.StreamHandler(sys.stderr)  # tunesmith's own records still reach the terminal
    divert = _Divert(handler)
    logging.captureWarnings(True)  # warnings.warn -> the "py.warnings" logger
    for name in LIBRARIES:
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).propagate = False
    for name in SELF_HANDLED:
        logging.getLogger(name).addFilter(divert)
    logging.getLogger().addHandler(handler)  # any other library's records (instead of Python's last-resort print)
    logging.getLogger("tunesmith").addHandler(own)
    logging.getLogger("tunesmith").propagate = False
    _installed = handler
    if "transformers" in sys.modules:
        route_transformers()
    try:
        yield handler
    finally:
        logging.captureWarnings(False)
        for name, propagate in saved.items():
            logging.getLogger(name).removeHandler(handler)
            logging.getLogger(name).propagate = propagate
        for name in SELF_HANDLED:
            logging.getLogger(name).removeFilter(divert)
        logging.getLogger().removeHandler(handler)
        logging.getLogger("tunesmith").removeHandler(own)
        if _transformers_routed:
            from transformers.utils import logging as transformers_logging

            transformers_logging.enable_default_handler()
        _installed, _transformers_routed = None, False
        if handler.file is not None:
            handler.file.close()


def route_transformers() -> None:
    """Take transformers' own stderr handler off (it adds one when imported); its records then reach only ours.

    Called when quiet mode starts after transformers was imported, and by ``models.load`` before a model loads."""
    global _transformers_routed
    if _installed is None or _transformers_routed:
        return
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_default_handler()
    transformers_logging.disable_progress_bar()
    _transformers_routed = True


def attach(folder: Path) -> None:
    """Write library output to ``folder/libraries.log`` from now on (a no-op unless quiet mode is on)."""
    if _installed is not None:
        _installed.attach(folder)
        if "transformers" in sys.modules:
            route_transformers()
