"""Progress on the terminal, one style for every long task (training, evaluation, preparation, deduplication,
audit, export, sweeps): a rich progress bar with counts, rate and ETA on a terminal; plain periodic lines otherwise
(CI logs), and none for a task that finishes in a couple of seconds."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress
from rich.text import Text

T = TypeVar("T")
QUIET_SECONDS = 2.0  # plain lines start only once a task has run this long
EVERY = 0.1  # a plain line per tenth of the total (or every LINE_SECONDS when the total is unknown)
LINE_SECONDS = 10.0
SINGULAR = {"batches": "batch"}


_live = [0]  # bars on screen now: a task inside another (a prediction during a run) shows none of its own


def _console() -> Console:
    return Console(stderr=True, soft_wrap=True)


class _Rate(ProgressColumn):
    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Any) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f} {self.unit}/s" if speed else f"- {self.unit}/s", style="progress.data.speed")


def _rate(count: float, seconds: float, unit: str) -> str:
    rate = count / seconds if seconds > 0 else 0.0
    if 0 < rate < 1:  # slow items (trials, folds): time per item reads better
        return f"{1 / rate:,.1f} s per {SINGULAR.get(unit, unit.removesuffix('s'))}"
    return f"{rate:,.1f} {unit}/s" if rate < 10 else f"{rate:,.0f} {unit}/s"


class Progress:
    """Counts of one task: ``advance(n)`` as work is done; a context manager (closing removes the bar).

    ``lines=True`` prints a line at every advance instead of a bar (sweeps: each trial prints its own progress).
    """

    def __init__(
        self, total: int | None, description: str, unit: str = "rows", enabled: bool = True, lines: bool = False
    ) -> None:
        self.total, self.description, self.unit = total, description, unit
        self.count = 0.0
        self.started = self.checked = time.perf_counter()
        self.stride, self.since = 1, 0  # look at the clock every `stride` calls (cheap for per-row loops)
        self.enabled = enabled
        self.next_line = EVERY if total else LINE_SECONDS
        self.printed = False
        self.lines = lines
        console = _console()
        self.bar: RichProgress | None = None
        if enabled and not lines and console.is_terminal and not _live[0]:
            _live[0] += 1
            self.bar = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn() if total else TextColumn("{task.completed:,.0f}"),
                TextColumn(unit),
                _Rate(unit),
                TimeRemainingColumn(),
                console=console,
                transient=True,
            )
            self.task = self.bar.add_task(description, total=total)
            self.bar.start()

    def describe(self, description: str) -> None:
        """A new description (e.g. the stage a task is in)."""
        self.description = description
        if self.bar is not None:
            self.bar.update(self.task, description=description)

    def advance(self, n: float = 1) -> None:
        self.count += n
        self.since += 1
        if self.lines and self.enabled:
            self._print(time.perf_counter() - self.started)
            return
        if self.since < self.stride or not self.enabled:
            return
        self.since = 0
        now = time.perf_counter()
        if now - self.checked < 0.05 and self.stride < 65536:
            self.stride *= 2
        self.checked = now
        if self.bar is not None:
            self.bar.update(self.task, completed=self.count)
        else:
            self._maybe_print(now - self.started)

    def _maybe_print(self, elapsed: float) -> None:
        mark = self.count / self.total if self.total else elapsed
        if mark < self.next_line or elapsed < QUIET_SECONDS:
            return
        step = EVERY if self.total else LINE_SECONDS
        self.next_line = (int(mark / step) + 1) * step
        self._print(elapsed)

    def _print(self, elapsed: float) -> None:
        line = f"{self.description}: {self.count:,.0f}"
        if self.total:
            eta = elapsed / self.count * (self.total - self.count) if self.count else 0.0
            line += (
                f"/{self.total:,} {self.unit} ({self.count / self.total:.0%})  {_rate(self.count, elapsed, self.unit)}"
            )
            line += f"  eta {eta:,.0f}s"
        else:
            line += f" {self.unit}  {_rate(self.count, elapsed, self.unit)}"
        print(line, file=sys.stderr, flush=True)
        self.printed = True

    def close(self) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=self.count)
            self.bar.stop()
            self.bar = None
            _live[0] -= 1
        elif self.printed and not self.lines:  # a long task said how far it got; say that it ended
            elapsed = time.perf_counter() - self.started
            print(
                f"{self.description}: {self.count:,.0f} {self.unit} in {elapsed:,.0f}s "
                f"({_rate(self.count, elapsed, self.unit)})",
                file=sys.stderr,
                flush=True,
            )
            self.printed = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def track(items: Iterable[T], description: str, enabled: bool = True, unit: str = "batches") -> Iterator[T]:
    """Iterate ``items`` with a progress display (total known when ``items`` has a length)."""
    total = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
    with Progress(total, description, unit, enabled) as progress:
        for item in items:
            yield item
            progress.advance()


class StepProgress:
    """Training steps: step, loss, learning rate, tokens/s and ETA."""

    def __init__(self, total: int, enabled: bool = True, description: str = "train") -> None:
        self.total, self.enabled = total, enabled
        self.console = _console()
        self.interactive = enabled and self.console.is_terminal
        self.every = max(1, total // 10)
        self.started = time.perf_counter()
        self.progress: RichProgress | None = None
        if self.interactive and not _live[0]:
            _live[0] += 1
            self.progress = RichProgress(
                TextColumn(f"[bold]{description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.task = self.progress.add_task(description, total=total)
            self.progress.start()

    def update(self, step: int, *, loss: float, lr: float, tokens_per_s: float, val_loss: float | None = None) -> None:
        if not self.enabled:
            return
        stats = f"loss {loss:.4f}  lr {lr:.2e}  {tokens_per_s:,.0f} tok/s"
        if val_loss is not None:
            stats += f"  val {val_loss:.4f}"
        if self.progress is not None:
            self.progress.update(self.task, completed=step, stats=stats)
        elif step % self.every == 0 or step == self.total or step == 1:
            elapsed = time.perf_counter() - self.started
            eta = elapsed / step * (self.total - step)
            print(f"step {step}/{self.total}  {stats}  eta {eta:,.0f}s", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
            _live[0] -= 1
