"""The studio's workspace: the one folder it may read and write. Every path a request names is resolved here, and
one that lands outside (``..``, an absolute path elsewhere, a symlink pointing out) is refused before it is opened.

Layout: data files anywhere in it; ``runs/<name>/`` (runs made with the CLI), ``tunesmith-jobs/`` (the jobs store
the studio launches runs through, the same default home as ``tunesmith serve --jobs`` started here), ``uploads/``,
``preferences/`` and ``judgments/`` (blind A/B), ``exports/``, and ``.studio/`` (scratch: estimates).
"""

from __future__ import annotations

import os
from pathlib import Path

from tunesmith.core.errors import TunesmithError

DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet", ".conll", ".txt", ".label", ".gz")
SKIPPED = {"tunesmith-jobs", ".studio", ".git", ".venv", "node_modules", "__pycache__", "exports", "judgments"}
MAX_LISTED = 500


class OutsideWorkspace(TunesmithError):
    """A path that resolves outside the workspace (answered with HTTP 403)."""


class Workspace:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise TunesmithError(f"workspace {root} is not a folder.\n  fix: create it, or pass --workspace DIR")

    runs = property(lambda self: self.root / "runs")
    jobs_home = property(lambda self: self.root / "tunesmith-jobs")
    uploads = property(lambda self: self.root / "uploads")
    preferences = property(lambda self: self.root / "preferences")
    judgments = property(lambda self: self.root / "judgments")
    exports = property(lambda self: self.root / "exports")
    scratch = property(lambda self: self.root / ".studio")

    def path(self, given: str | Path, what: str = "path", must_exist: bool = False) -> Path:
        """``given`` (relative to the workspace, or absolute inside it) resolved, symlinks followed; refused when it
        lands outside the workspace, or (``must_exist``) does not exist."""
        text = str(given).strip()
        if not text:
            raise TunesmithError(f"no {what} given: type a path inside the workspace {self.root}")
        if "\x00" in text:
            raise OutsideWorkspace(f"{what} {text!r}: not a valid path")
        resolved = (self.root / Path(text).expanduser()).resolve()
        if not resolved.is_relative_to(self.root):
            raise OutsideWorkspace(
                f"{what} {text!r} is outside the workspace {self.root}; the studio reads and writes only there.\n"
                "  fix: copy the file into the workspace, or start the studio with --workspace pointing above it"
            )
        if must_exist and not resolved.exists():
            raise TunesmithError(f"{what} not found in the workspace: {self.relative(resolved)}")
        return resolved

    def relative(self, path: Path) -> str:
        """How a path inside the workspace is shown: relative to it."""
        path = Path(path)
        return path.relative_to(self.root).as_posix() if path.is_relative_to(self.root) else str(path)

    def model_name(self, name: str) -> str:
        """A model named by path (absolute, ./, ../, ~ or an existing folder here) confined to the workspace; an
        alias or hub id is kept as it is."""
        text = name.strip()
        path_like = text.startswith(("/", ".", "~")) or (self.root / text).exists()
        return str(self.path(text, "model.name", must_exist=True)) if path_like else text

    def data_files(self) -> list[str]:
        """Data files in the workspace (relative paths), for the pickers; run and job folders are left out."""
        found: list[str] = []
        for folder, subfolders, names in os.walk(self.root):
            here = Path(folder)
            subfolders[:] = sorted(d for d in subfolders if d not in SKIPPED and not (here / d / "state.json").exists())
            for name in sorted(names):
                if name.endswith(DATA_SUFFIXES) and not name.endswith(".audit.json") and name != "annotations.jsonl":
                    found.append(self.relative(here / name))
                    if len(found) >= MAX_LISTED:
                        return found
        return found
