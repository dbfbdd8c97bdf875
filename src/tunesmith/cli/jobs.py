"""`tunesmith worker` and `tunesmith keys`: the jobs service's commands (the server is `tunesmith serve --jobs`)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

err = Console(stderr=True, soft_wrap=True)
keys_app = typer.Typer(no_args_is_help=True, help="API keys of the jobs service (each key sees only its own jobs).")

HomeOpt = typer.Option(
    Path("tunesmith-jobs"),
    "--home",
    envvar="TUNESMITH_HOME",
    help="Folder of uploaded files and job runs (shared by every worker), and of the SQLite store.",
)
StoreOpt = typer.Option(
    None,
    "--store",
    envvar="TUNESMITH_STORE",
    help="Database URL of the jobs store, shared by every worker: postgresql://USER:PASSWORD@HOST:PORT/DB "
    "(default: SQLite in --home).",
)


def worker(
    home: Path = HomeOpt,
    store: str | None = StoreOpt,
    name: str | None = typer.Option(None, "--name", help="Worker name in job events (default: host:pid)."),
    poll: float = typer.Option(1.0, "--poll", min=0.05, help="Seconds between looks at an empty queue."),
    stale_after: float = typer.Option(
        60.0, "--stale-after", min=0.5, help="A running job whose worker was silent this long is taken over."
    ),
    once: bool = typer.Option(False, "--once", help="Stop when the queue is empty."),
) -> None:
    """Take queued fine-tuning jobs and run each as a `tunesmith run` in its own process and run directory."""
    import signal
    import threading

    from tunesmith.jobs.db import shown
    from tunesmith.jobs.store import connect
    from tunesmith.jobs.worker import Worker

    connected = connect(home, store)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):  # stop taking jobs; pause the running one with a checkpoint
        signal.signal(signum, lambda *_: stop.set())
    runner = Worker(connected, name=name, poll=poll, stale_after=stale_after)
    err.print(f"worker {runner.name} on {shown(connected.url)} (Ctrl+C pauses the running job and stops)")
    runner.run(stop, once=once)


@keys_app.command("create")
def create(name: str = typer.Argument(..., help="A name for the key (a person or a service)."), home: Path = HomeOpt,
           store: str | None = StoreOpt) -> None:  # fmt: skip
    """Create a key and print it once (only its hash is stored)."""
    from tunesmith.jobs.keys import create_key
    from tunesmith.jobs.store import connect

    key = create_key(connect(home, store).engine, name)
    err.print(f"key {name!r} created; it is shown once, keep it:")
    print(key)


@keys_app.command("list")
def list_(home: Path = HomeOpt, store: str | None = StoreOpt) -> None:
    """The keys by name (never the keys themselves)."""
    import time

    from tunesmith.jobs.keys import list_keys
    from tunesmith.jobs.store import connect

    for row in list_keys(connect(home, store).engine):
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(row["created_at"]))
        print(f"{row['name']}\tcreated {created}\t{'revoked' if row['revoked_at'] else 'active'}")


@keys_app.command("revoke")
def revoke(name: str = typer.Argument(...), home: Path = HomeOpt, store: str | None = StoreOpt) -> None:
    """Revoke a key: its requests are refused from now on (its files, jobs and models stay)."""
    from tunesmith.jobs.keys import revoke_key
    from tunesmith.jobs.store import connect

    revoke_key(connect(home, store).engine, name)
    err.print(f"key {name!r} revoked")
