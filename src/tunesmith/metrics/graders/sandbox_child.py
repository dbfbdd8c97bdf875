"""The python grader's child process (run as a script by ``sandbox.py``, never imported): standard library only.

Reads ``{"source", "timeout_s", "memory_mb"}`` then one ``{"i", "sample", "item"}`` per line on stdin and writes one
``{"i", "score"}`` or ``{"i", "error"}`` per line on stdout. Before it runs the grader's code it caps its own
memory, file size and core dumps, moves into a network namespace of its own when the kernel allows it, and adds an
audit hook (which code cannot remove) that refuses sockets, new processes and loading native libraries by hand.
"""

import ctypes
import json
import math
import resource
import signal
import sys

BLOCKED = (
    "socket.",
    "subprocess.",
    "os.system",
    "os.exec",
    "os.spawn",
    "os.posix_spawn",
    "os.fork",
    "os.forkpty",
    "pty.",
    "ctypes.dlopen",
    "ctypes.dlsym",
    "sys.addaudithook",
)
CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000


class GradeTimeout(BaseException):  # BaseException: a grader's `except Exception` must not swallow it
    pass


def isolate(memory_mb):
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024 * 1024, 16 * 1024 * 1024))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    libc = ctypes.CDLL(None, use_errno=True)
    network = "audit hook"
    for flags in (CLONE_NEWNET, CLONE_NEWUSER | CLONE_NEWNET):
        if libc.unshare(flags) == 0:
            network = "network namespace + audit hook"
            break
    sys.addaudithook(_refuse)
    return network


def _refuse(event, args):
    if event.startswith(BLOCKED):
        raise PermissionError(f"python grader: {event} is not allowed (no network, processes or native libraries)")


def _on_alarm(signum, frame):
    raise GradeTimeout


def main():
    header = json.loads(sys.stdin.readline())
    network = isolate(header["memory_mb"])
    out = sys.stdout
    sys.stdout = sys.stderr  # a grader's print() must not corrupt the result stream
    out.write(json.dumps({"ready": network}) + "\n")
    out.flush()
    grade, problem = None, None
    namespace = {"__name__": "grader"}
    try:
        exec(compile(header["source"], "<grader>", "exec"), namespace)
        grade = namespace.get("grade")
        if not callable(grade):
            problem = "the source defines no grade(sample, item) function"
    except BaseException as exc:
        problem = f"the source does not run: {type(exc).__name__}: {exc}"
    signal.signal(signal.SIGALRM, _on_alarm)
    for line in sys.stdin:
        task = json.loads(line)
        result = {"i": task["i"]}
        if problem is not None:
            result["error"] = problem
        else:
            signal.setitimer(signal.ITIMER_REAL, header["timeout_s"])
            try:
                value = grade(task["sample"], task["item"])
                signal.setitimer(signal.ITIMER_REAL, 0)
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    result["error"] = f"grade returned {value!r}, not a finite number"
                else:
                    result["score"] = float(value)
            except GradeTimeout:
                result["error"] = f"timed out after {header['timeout_s']:g} s"
            except MemoryError:
                signal.setitimer(signal.ITIMER_REAL, 0)
                result["error"] = f"ran out of memory (limit {header['memory_mb']} MB)"
            except BaseException as exc:
                signal.setitimer(signal.ITIMER_REAL, 0)
                result["error"] = f"{type(exc).__name__}: {exc}"[:500]
        out.write(json.dumps(result) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
