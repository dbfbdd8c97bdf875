"""The jobs store and the folders beside it: ``<home>/files`` (uploads) and ``<home>/runs`` (one run directory per
job). Workers on other machines need the same ``home`` (a shared folder) and the same database URL."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.jobs.db import open_store, store_url
from tunesmith.jobs.files import Files


@dataclass
class Store:
    engine: Any
    home: Path
    files: Files
    url: str

    @property
    def runs(self) -> Path:
        return self.home / "runs"

    def close(self) -> None:
        self.engine.dispose()


def connect(home: Path, store: str | None = None) -> Store:
    """Open (and migrate) the store: SQLite in ``home`` unless ``store`` is a database URL."""
    home = home.resolve()
    url = store_url(store, home)
    engine = open_store(url)
    (home / "runs").mkdir(parents=True, exist_ok=True)
    return Store(engine, home, Files(engine, home / "files"), url)
