"""A throwaway PostgreSQL server for tests (Debian's package; `make test` installs it): a cluster initdb'd in a
temp folder, listening on 127.0.0.1 on a free port with a known password, stopped and removed at the end. The
server refuses to run as root, so as root it runs as the `postgres` OS user."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.cli import free_port

PASSWORD = "tunesmith-test"


@dataclass
class Postgres:
    """A running server: ``url()`` for its superuser, ``database()`` for a fresh role and database."""

    port: int
    host: str = "127.0.0.1"

    def url(self, user: str = "postgres", password: str = PASSWORD, database: str = "postgres") -> str:
        return f"postgresql://{user}:{password}@{self.host}:{self.port}/{database}"

    def execute(self, *statements: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as connection:
            for statement in statements:
                connection.execute(statement)

    def database(self, name: str) -> str:
        """A new role and database, both ``name`` (the role owns the database, password ``name``); its URL."""
        self.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{name}'", f"CREATE DATABASE {name} OWNER {name}")
        return self.url(name, name, name)


def _bin_dir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    assert found, "PostgreSQL is needed for this test; `make test` installs Debian's postgresql package"
    return found[-1].parent


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One server for the whole session (starting it takes ~1 s, initdb ~1 s)."""
    bin_dir = _bin_dir()
    folder = Path(tempfile.mkdtemp(prefix="tunesmith-pg-"))  # not under pytest's 0700 folder: postgres must enter
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_owner:
        shutil.chown(folder, "postgres")
    (folder / "password").write_text(PASSWORD)
    if as_owner:
        shutil.chown(folder / "password", "postgres")
    data = folder / "data"
    quiet = {"check": True, "capture_output": True, "text": True}
    auth = ["-U", "postgres", f"--pwfile={folder / 'password'}", "-A", "scram-sha-256"]
    subprocess.run([*as_owner, bin_dir / "initdb", "-D", data, *auth, "-E", "UTF8", "--locale=C", "--no-sync"], **quiet)
    server = Postgres(free_port())
    options = f"-c listen_addresses=127.0.0.1 -p {server.port} -k {folder} -c fsync=off -c full_page_writes=off"
    start = [*as_owner, bin_dir / "pg_ctl", "-D", data, "-l", folder / "log", "-w", "-o", options, "start"]
    if subprocess.run(start, capture_output=True, text=True).returncode:
        log = (folder / "log").read_text() if (folder / "log").is_file() else ""
        shutil.rmtree(folder, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start:\n{log}")
    try:
        yield server
    finally:
        subprocess.run([*as_owner, bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"], **quiet)
        shutil.rmtree(folder, ignore_errors=True)
