"""The `tunesmith` command: the real console script in a subprocess, the same entry point in this process, and a
`tunesmith serve` process or an app served in a thread; free TCP ports."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from unittest import mock


def free_port() -> int:
    """A TCP port nothing on this machine listens on now (for a server or a launch's rendezvous)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """Run the real `tunesmith` console script."""
    exe = Path(sys.executable).with_name("tunesmith")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


def run_cli_in_process(*args: str) -> subprocess.CompletedProcess[str]:
    """`tunesmith ARGS` in this process, without the 2-3 s of interpreter and import start-up of ``run_cli``; for
    commands that stop with a usage or user error before any real work.

    Runs the console script's own entry point, ``tunesmith.cli.main`` (the typer ``app`` plus what a user sees of
    a ``TunesmithError``: one ``error:`` line on stderr and its exit code, 2), inside typer's ``CliRunner``
    isolation, which gives it separate stdout and stderr. Called on ``app`` alone, a ``TunesmithError`` would
    escape as an exception (``CliRunner`` reports exit code 1, with no message). Returns what ``run_cli`` returns;
    an exception that escapes ``main`` is printed to stderr with exit code 1, as the interpreter would.
    """
    from typer.testing import CliRunner

    from tunesmith.cli import main

    with CliRunner().isolation() as (stdout, stderr, _), mock.patch.object(sys, "argv", ["tunesmith", *args]):
        try:
            main()
            code = 0
        except SystemExit as exc:
            if isinstance(exc.code, str):
                print(exc.code, file=sys.stderr)
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        except Exception:
            traceback.print_exc(file=sys.stderr)
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        out, err = (stream.getvalue().decode("utf-8", "replace") for stream in (stdout, stderr))
    return subprocess.CompletedProcess(["tunesmith", *args], code, out, err)


@contextlib.contextmanager
def serving(args: list[str], log: Path, timeout: float = 180) -> Iterator[str]:
    """`tunesmith serve ARGS --port P` in a real subprocess; yields its base URL once /health answers.

    On exit the server must still be alive with no traceback in its log; it is then stopped with Ctrl-C.
    """
    import httpx

    port = free_port()
    exe = Path(sys.executable).with_name("tunesmith")
    with log.open("w") as handle:
        command = [str(exe), "serve", *args, "--port", str(port)]
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start:\n" + log.read_text()
            time.sleep(0.3)
        yield url
        assert process.poll() is None, "the server died:\n" + log.read_text()
        assert "Traceback" not in log.read_text(), log.read_text()
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def serving_app(app: object, timeout: float = 30) -> Iterator[str]:
    """An ASGI app served over real HTTP by uvicorn in a thread of this process; yields its base URL."""
    import threading

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the in-process server did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
