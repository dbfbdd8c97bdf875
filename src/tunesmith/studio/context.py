"""What every page of one studio shares: its settings, workspace, the jobs store it launches runs through (with
worker threads beside it, as ``tunesmith serve --jobs`` has), loaded models (playground) and started servers (ship)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Request

from tunesmith.jobs.store import Store, connect
from tunesmith.studio.workspace import Workspace

OWNER = "studio"  # the jobs' owner: no key has this id (keys are key-<hex>), so no API client sees these jobs


@dataclass(frozen=True)
class Settings:
    workspace: Path
    host: str = "127.0.0.1"
    token: str | None = None
    allow_hosts: tuple[str, ...] = ()
    store: str | None = None  # a database URL; default: SQLite in <workspace>/tunesmith-jobs
    workers: int = 1
    max_body_bytes: int = 2**20
    max_upload_bytes: int = 256 * 2**20


@dataclass
class Studio:
    settings: Settings
    workspace: Workspace
    store: Store
    extras: dict[str, Any] = field(default_factory=dict)  # per-page state (model cache, servers), by page
    lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    @classmethod
    def open(cls, settings: Settings) -> Studio:
        workspace = Workspace(settings.workspace)
        store = connect(workspace.jobs_home, settings.store)
        store.files.clean_temps()
        return cls(settings, workspace, store)

    def start_workers(self) -> None:
        """Worker threads running the studio's jobs (each as `tunesmith run` in its own process)."""
        from tunesmith.jobs.worker import Worker

        self._stop.clear()
        for i in range(self.settings.workers):
            thread = threading.Thread(
                target=Worker(self.store, poll=0.25).run, args=(self._stop,), name=f"studio-worker-{i}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        """Stop the workers (a running job is paused with a checkpoint and queued again) and what pages started."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=90)
        self._threads.clear()
        for extra in self.extras.values():
            closer = getattr(extra, "close", None)
            if closer is not None:
                closer()
        self.store.close()

    def extra(self, name: str, make: Any) -> Any:
        """The page state named ``name``, made on first use."""
        with self.lock:
            if name not in self.extras:
                self.extras[name] = make()
            return self.extras[name]


def studio(request: Request) -> Studio:
    """The studio of the app serving ``request`` (a FastAPI dependency)."""
    return request.app.state.studio
