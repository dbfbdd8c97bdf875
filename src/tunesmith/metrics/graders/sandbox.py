"""Run a python grader's ``grade(sample, item)`` in a separate process with limits (``sandbox_child.py``).

The child caps its address space (``memory_mb``), has ``timeout_s`` per sample (a timer inside it; a child stuck
where the timer cannot reach is killed from here after ``timeout_s`` + a grace), sees no network (its own network
namespace where the kernel allows, and an audit hook refusing sockets and new processes in any case), starts in an
empty temporary folder with a bare environment and Python's isolated mode. A sample whose grading raises, times
out or crashes the child scores 0 with the reason recorded; the child is started again for the rest.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Task = tuple[dict[str, Any], dict[str, Any]]  # (sample, item)
CHILD = Path(__file__).with_name("sandbox_child.py")
GRACE_S = 5.0  # beyond timeout_s, for a child whose timer cannot fire (stuck in C code) or that is starting up
START_S = 60.0  # a grader's imports (numpy, ...) on a busy machine


@dataclass(frozen=True)
class Outcome:
    score: float
    error: str | None = None


def run_python_grader(source: str, tasks: Sequence[Task], timeout_s: float, memory_mb: int) -> list[Outcome]:
    """``grade(sample, item)`` of each (sample, item), in order."""
    results: dict[int, Outcome] = {}
    pending = list(range(len(tasks)))
    while pending:
        done = _one_child(source, tasks, pending, timeout_s, memory_mb)
        results.update(done)
        pending = [i for i in pending if i not in results]
    return [results[i] for i in range(len(tasks))]


def _one_child(
    source: str,
    tasks: Sequence[Task],
    todo: list[int],
    timeout_s: float,
    memory_mb: int,
) -> dict[int, Outcome]:
    """Grade ``todo`` in one child until it finishes or fails; the sample it failed on is given its reason."""
    results: dict[int, Outcome] = {}
    with tempfile.TemporaryDirectory(prefix="tunesmith-grader-") as home:
        env = {"HOME": home, "TMPDIR": home, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "LC_ALL": "C.UTF-8"}
        process = subprocess.Popen(
            [sys.executable, "-I", str(CHILD)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=home,
            env=env,
            text=True,
        )
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True).start()
        errors: list[str] = []
        threading.Thread(target=_read_tail, args=(process.stderr, errors), daemon=True).start()
        threading.Thread(
            target=_feed, args=(process.stdin, source, tasks, todo, timeout_s, memory_mb), daemon=True
        ).start()
        try:
            if not isinstance(_next(lines, START_S + timeout_s), str):
                results[todo[0]] = Outcome(0.0, "the grader process did not start: " + _tail(errors))
                return results
            for index in todo:
                line = _next(lines, timeout_s + GRACE_S)
                if line is _TIMEOUT:  # stuck where its own timer cannot reach it
                    results[index] = Outcome(0.0, f"timed out after {timeout_s:g} s (killed)")
                    return results
                if line is None:  # dead: out of memory outside Python's reach, a crash, an exit
                    process.wait()
                    results[index] = Outcome(
                        0.0, f"the grader process died (exit {process.returncode}): {_tail(errors)}"
                    )
                    return results
                reply = json.loads(str(line))
                results[reply["i"]] = Outcome(reply.get("score", 0.0), reply.get("error"))
            return results
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()


def _feed(stream: Any, source: str, tasks: Any, todo: list[int], timeout_s: float, memory_mb: int) -> None:
    try:
        stream.write(json.dumps({"source": source, "timeout_s": timeout_s, "memory_mb": memory_mb}) + "\n")
        for index in todo:
            sample, item = tasks[index]
            stream.write(json.dumps({"i": index, "sample": sample, "item": item}) + "\n")
        stream.close()
    except (BrokenPipeError, OSError, ValueError):
        pass  # the child died; the reader reports it


def _read_lines(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def _read_tail(stream: Any, errors: list[str]) -> None:
    for line in stream:
        errors.append(line.rstrip())
        del errors[:-5]


_TIMEOUT = object()


def _next(lines: queue.Queue[str | None], timeout: float) -> Any:
    """The child's next line, None at its end, or ``_TIMEOUT``."""
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        return _TIMEOUT


def _tail(errors: list[str]) -> str:
    return " | ".join(errors[-3:]) or "no message"
