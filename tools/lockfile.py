"""Keep requirements/lock.txt honest: it records a digest of what it was compiled from, and `check` compares.

    python3 tools/lockfile.py stamp    # after `uv pip compile` (make lock): write the digest into the lock's header
    python3 tools/lockfile.py check    # before any install (make): exit 2, naming `make lock`, if the inputs moved

The inputs are the project's dependency tables in pyproject.toml (not the whole file: a ruff setting must not ask
for a relock), the CPU torch constraint and the demo-model pins. Standard library only: it runs before any venv.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements" / "lock.txt"
INPUTS = (REPO / "constraints" / "cpu.txt", REPO / "requirements" / "demo-models.in")
MARK = "# inputs-sha256: "


def inputs_digest() -> str:
    """sha256 over the dependency tables of pyproject.toml and the other lock inputs."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    tables = {key: project.get(key) for key in ("requires-python", "dependencies", "optional-dependencies")}
    digest = hashlib.sha256(json.dumps(tables, sort_keys=True).encode())
    for path in INPUTS:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def recorded_digest() -> str | None:
    """The digest written into the lock when it was compiled, or None (no lock, or no digest line)."""
    if not LOCK.exists():
        return None
    for line in LOCK.read_text().splitlines():
        if line.startswith(MARK):
            return line.removeprefix(MARK).strip()
    return None


def stamp() -> None:
    """Put the current digest at the top of the lock (replacing an older one)."""
    lines = [line for line in LOCK.read_text().splitlines() if not line.startswith(MARK)]
    LOCK.write_text("\n".join([MARK + inputs_digest(), *lines]) + "\n")


def check() -> int:
    """0 when the lock was compiled from today's inputs; otherwise say what to do and return 2."""
    recorded = recorded_digest()
    if recorded == inputs_digest():
        return 0
    rel = LOCK.relative_to(REPO)
    if recorded is None:
        why = f"{rel} is missing or has no '{MARK.strip()}' line"
    else:
        why = f"{rel} was compiled from other dependencies than pyproject.toml / {', '.join(_rel(INPUTS))} now name"
    print(f"error: {why}.\n  fix: run `make lock` (and commit the new lock), then run make again.", file=sys.stderr)
    return 2


def _rel(paths: tuple[Path, ...]) -> list[str]:
    return [str(p.relative_to(REPO)) for p in paths]


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "stamp":
        stamp()
    elif command == "check":
        sys.exit(check())
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
