"""Training progress: a rich progress bar on a terminal, plain periodic lines otherwise (CI logs)."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class StepProgress:
    """Shows step, loss, learning rate, tokens/s and ETA."""

    def __init__(self, total: int, enabled: bool = True, description: str = "train") -> None:
        self.total, self.enabled = total, enabled
        self.console = Console(stderr=True, soft_wrap=True)
        self.interactive = enabled and self.console.is_terminal
        self.every = max(1, total // 10)
        self.started = time.perf_counter()
        self.progress: Progress | None = None
        if self.interactive:
            self.progress = Progress(
                TextColumn(f"[bold]{description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.task = self.progress.add_task(description, total=total, stats="")
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


def track(items: list, description: str, enabled: bool = True) -> object:
    """Iterate ``items`` with a transient progress bar on a terminal; silently otherwise."""
    console = Console(stderr=True, soft_wrap=True)
    if not enabled or not console.is_terminal:
        return iter(items)
    from rich.progress import track as rich_track

    return rich_track(items, description=description, console=console, transient=True)
