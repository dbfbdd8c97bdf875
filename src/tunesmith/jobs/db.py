"""Open the jobs store: a SQLAlchemy engine on SQLite (a file, the zero-setup default) or PostgreSQL (a URL that
workers on several machines share), migrated to the newest schema (alembic) before first use."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tunesmith.core.errors import ConfigError, TunesmithError

# SQLAlchemy picks psycopg2 for a bare postgresql:// URL; tunesmith installs psycopg 3.
DRIVERS = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg"}
MIGRATE_LOCK = 0x7466_6A62  # any fixed number: the PostgreSQL advisory lock held while migrating


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def now() -> float:
    return time.time()


def store_url(store: str | None, home: Path) -> str:
    """The SQLAlchemy URL: SQLite in ``home`` by default; ``postgresql://`` goes through psycopg 3."""
    if store is None:
        home.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(home / 'jobs.db').resolve()}"
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(store)
    except ArgumentError:
        raise ConfigError(
            f"--store {store!r} is not a database URL.\n"
            "  fix: write postgresql://USER:PASSWORD@HOST:PORT/DATABASE, or sqlite:////absolute/path/jobs.db"
        ) from None
    if url.drivername in DRIVERS:
        url = url.set(drivername=DRIVERS[url.drivername])
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(f"--store: the jobs store runs on SQLite or PostgreSQL, not {url.get_backend_name()}")
    return url.render_as_string(hide_password=False)


def shown(url: str) -> str:
    """The URL as printed: never the password."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True).replace("postgresql+psycopg://", "postgresql://", 1)


def create_engine(url: str) -> Any:
    import sqlalchemy
    from sqlalchemy import event

    if not url.startswith("sqlite"):
        return sqlalchemy.create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 10})
    engine = sqlalchemy.create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _connect(connection: Any, _record: Any) -> None:
        connection.isolation_level = None  # transactions are begun by the "begin" hook below
        connection.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
        connection.execute("PRAGMA foreign_keys=ON")
        connection.execute("PRAGMA busy_timeout=30000")

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        # Every transaction takes SQLite's write lock up front: a deferred one that reads and then writes can fail
        # at once with "database is locked" when another process wrote in between (no busy wait helps there).
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def open_store(url: str) -> Any:
    """An engine on the store, its schema migrated to the newest version (one process at a time)."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    engine = create_engine(url)
    try:
        with _migration_lock(engine, url) as connection:
            _upgrade(connection)
    except (DBAPIError, OperationalError) as exc:
        engine.dispose()
        detail = str(getattr(exc, "orig", exc) or exc).strip().splitlines()[0]
        raise TunesmithError(
            f"jobs store {shown(url)}: {detail}.\n  fix: check that the database exists and this user may create "
            "tables in it"
        ) from None
    return engine


@contextlib.contextmanager
def _migration_lock(engine: Any, url: str) -> Iterator[Any]:
    import sqlalchemy

    if url.startswith("sqlite"):
        from filelock import FileLock
        from sqlalchemy.engine import make_url

        database = make_url(url).database or ""
        lock = FileLock(f"{database}.migrate.lock") if database and database != ":memory:" else contextlib.nullcontext()
        with lock, engine.connect() as connection:
            yield connection
        return
    with engine.connect() as connection:  # a session-level lock, released when this connection closes
        connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATE_LOCK})
        connection.commit()
        try:
            yield connection
        finally:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATE_LOCK})
            connection.commit()


def _upgrade(connection: Any) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
    connection.commit()
