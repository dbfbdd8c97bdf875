"""Where a sweep's Optuna study lives: SQLite in the sweep folder, or a database URL (``--storage``) that workers
on several machines share. A URL is checked by connecting before any trial runs, so an unreachable server, bad
credentials, a missing database or a missing driver is one message naming what to fix.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tunesmith.core.config import SweepConfig
from tunesmith.core.errors import ConfigError, TunesmithError

# SQLAlchemy picks psycopg2 for a bare postgresql:// URL; tunesmith installs psycopg 3.
DRIVERS = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg"}
# The package that provides a driver module SQLAlchemy may ask for.
PACKAGES = {"psycopg2": "psycopg2-binary", "psycopg": "psycopg[binary]", "MySQLdb": "mysqlclient", "pymysql": "PyMySQL"}
# Any fixed number: every tunesmith worker takes this PostgreSQL advisory lock while it sets up a study.
SETUP_LOCK = 0x7475_6E65


def storage_url(storage: str | None, sweep_dir: Path) -> str:
    """The SQLAlchemy URL of the study: SQLite in the sweep folder by default; ``postgresql://`` uses psycopg 3."""
    if storage is None:
        return f"sqlite:///{(sweep_dir / 'study.db').resolve()}"
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(storage)
    except ArgumentError:
        raise ConfigError(
            f"--storage {storage!r} is not a database URL.\n"
            "  fix: write it as postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
        ) from None
    if url.drivername in DRIVERS:
        url = url.set(drivername=DRIVERS[url.drivername])
    return url.render_as_string(hide_password=False)


def shown(url: str) -> str:
    """The URL as printed: never the password, and postgresql:// as the user wrote it."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True).replace("postgresql+psycopg://", "postgresql://", 1)


def check_connection(url: str) -> None:
    """Connect once: TunesmithError naming the server, user, database or driver to fix when that fails."""
    import sqlalchemy
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError, NoSuchModuleError

    parsed = make_url(url)
    where = f"--storage {shown(url)}"
    options = {"connect_args": {"connect_timeout": 10}} if parsed.get_backend_name() == "postgresql" else {}
    try:
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, **options)
    except NoSuchModuleError:
        raise ConfigError(
            f"{where}: SQLAlchemy has no database driver called '{parsed.drivername}'.\n"
            "  fix: use postgresql://USER:PASSWORD@HOST:PORT/DATABASE (or sqlite:///FILE on one machine)"
        ) from None
    except ImportError as exc:
        module = getattr(exc, "name", None) or str(exc)
        package = PACKAGES.get(module.split(".")[0], "the package that provides it")
        hint = "; or write postgresql://... to use psycopg 3, which tunesmith installs" if "postgres" in url else ""
        raise ConfigError(
            f"{where}: its database driver (Python module '{module}') is not installed.\n"
            f"  fix: pip install {package}{hint}"
        ) from None
    try:
        with engine.connect():
            pass
    except DBAPIError as exc:
        raise TunesmithError(f"{where}: {_connection_problem(parsed, exc)}") from None
    finally:
        engine.dispose()


def _connection_problem(url: Any, exc: Exception) -> str:
    """What a failed connection means and how to fix it, from libpq's message (it carries no error code before
    the session starts). A message this does not know (e.g. a server set to another language) is shown as is."""
    message = str(getattr(exc, "orig", exc) or exc).strip()
    detail = message.rsplit("failed: ", 1)[-1].splitlines()[0].removeprefix("FATAL:").strip()
    server = f"{url.host or 'localhost'}:{url.port or 5432}"
    lower = message.lower()
    if (
        "authentication failed" in lower
        or "no password supplied" in lower
        or ("role" in lower and "not exist" in lower)
    ):
        return (
            f"the server at {server} refused user '{url.username}' ({detail}).\n"
            "  fix: correct the user and password in the URL, or create that role on the server"
        )
    if "database" in lower and "does not exist" in lower:
        return (
            f"database '{url.database}' does not exist on {server}.\n"
            f"  fix: create it (createdb -h {url.host or 'localhost'} -p {url.port or 5432} -U {url.username} "
            f"{url.database}) or name an existing database in the URL"
        )
    unreachable = ("connection refused", "resolve host", "translate host", "timeout", "unreachable", "no route")
    if any(word in lower for word in unreachable) or "could not connect" in lower or "closed the connection" in lower:
        return (
            f"cannot reach a database server at {server} ({detail}).\n"
            "  fix: start the server, or correct the host and port in the URL (every worker must reach it)"
        )
    return f"cannot connect: {detail}"


def open_storage(url: str, settings: SweepConfig, shared: bool) -> Any:
    """Optuna's RDB storage at ``url`` (its tables created on first use). Shared storages beat a heartbeat per
    running trial, so a trial whose worker died is failed after ``grace_period`` and its values are tried once
    more."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    if not shared:
        return optuna.storages.RDBStorage(url)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: stable since 2.8
            return optuna.storages.RDBStorage(
                url,
                # A trial may keep a connection idle for hours; test it before use rather than fail on a dropped one.
                engine_kwargs={"pool_pre_ping": True},
                heartbeat_interval=settings.heartbeat_interval,
                grace_period=settings.grace_period,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
            )
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", exc) or exc).strip().splitlines()[0]
        fix = (
            "give the user the right to create tables (GRANT CREATE ON SCHEMA public TO ...) or use a database it owns"
            if "permission denied" in detail
            else "check that the URL names a database that this user may write to"
        )
        raise TunesmithError(
            f"--storage {shown(url)}: cannot set up Optuna's tables ({detail}).\n  fix: {fix}"
        ) from None
    except RuntimeError as exc:  # Optuna: the tables were written by another Optuna version
        raise TunesmithError(f"--storage {shown(url)}: {exc}") from None


@contextlib.contextmanager
def setup_lock(url: str) -> Iterator[None]:
    """On PostgreSQL, one worker at a time creates Optuna's tables, the study and its enqueued trials: workers
    started together would otherwise race to create the same tables, or each enqueue the same trials. The URL must
    have passed ``check_connection``."""
    import sqlalchemy

    if not url.startswith("postgresql"):
        yield
        return
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:  # a session-level lock: released when this connection closes
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": SETUP_LOCK})
            yield
    finally:
        engine.dispose()
