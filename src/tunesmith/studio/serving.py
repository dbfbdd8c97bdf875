"""Runs served from the Ship page: each a `tunesmith serve RUN` process on a free loopback port (a process boundary,
as the jobs' workers have: the studio does not import the server, its sibling), stopped from the page or when the
studio stops."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.core.errors import TunesmithError

MAX_SERVERS = 4


@dataclass
class Served:
    id: int
    key: str
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    started: float = field(default_factory=time.time)

    def state(self) -> str:
        if self.process.poll() is not None:
            return f"stopped (exit code {self.process.returncode})"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=0.5):
                return "ready"
        except OSError:
            return "starting"

    def describe(self) -> dict[str, Any]:
        tail = self.log.read_text(encoding="utf-8", errors="replace").splitlines()[-5:] if self.log.is_file() else []
        return {"id": self.id, "key": self.key, "name": self.name, "port": self.port, "state": self.state(),
                "url": f"http://127.0.0.1:{self.port}/v1", "log": "\n".join(tail)}  # fmt: skip


class Servers:
    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: dict[int, Served] = {}
        self.lock = threading.Lock()
        self.next_id = 1

    def start(self, key: str, name: str, run_dir: Path, force: bool) -> Served:
        with self.lock:
            live = [s for s in self.running.values() if s.process.poll() is None]
            if len(live) >= MAX_SERVERS:
                raise TunesmithError(f"{len(live)} runs are served already; stop one first")
            port = _free_port()
            self.logs.mkdir(parents=True, exist_ok=True)
            log = self.logs / f"serve-{self.next_id}.log"
            command = [sys.executable, "-m", "tunesmith.cli", "serve", str(run_dir), "--host", "127.0.0.1",
                       "--port", str(port), *(["--force"] if force else [])]  # fmt: skip
            with log.open("wb") as out:
                process = subprocess.Popen(
                    command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
                )
            served = Served(self.next_id, key, name, port, process, log)
            self.running[served.id] = served
            self.next_id += 1
            return served

    def stop(self, server_id: int) -> Served:
        served = self.running.get(server_id)
        if served is None:
            raise TunesmithError(f"no server {server_id}")
        _stop(served.process)
        return served

    def list(self) -> list[dict[str, Any]]:
        return [s.describe() for s in self.running.values()]

    def close(self) -> None:
        for served in self.running.values():
            _stop(served.process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
