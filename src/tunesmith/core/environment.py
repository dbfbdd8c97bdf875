"""What a run ran on: ``runs/<name>/environment.json`` (versions, commit, CPU, GPU, seeds), shown in the report
and the model card, so a figure can be traced to the machine and the libraries that made it.

Whatever cannot be read (no git checkout, no GPU, no nvidia-smi) is recorded as ``None`` and named in
``missing`` with the reason: a record that is incomplete says so rather than guessing.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "transformers", "peft", "accelerate", "trl", "deepspeed", "datasets", "numpy", "tokenizers")
# CPU features that decide which kernels run (and whether bf16 is fast on a CPU)
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")


def collect(seeds: dict[str, int], precision: dict[str, Any] | None = None) -> dict[str, Any]:
    """The environment of this process: the dict written to ``environment.json``; ``precision`` is the training
    precision chosen for this machine and why (the engine decides it)."""
    missing: list[str] = []
    return {
        "precision": precision,
        "recorded": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tunesmith": _tunesmith(missing),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": _packages(missing),
        "cpu": _cpu(missing),
        "gpu": _gpus(missing),
        "seeds": seeds,
        "missing": missing,
    }


def config_seeds(config: dict[str, Any], prefix: str = "") -> dict[str, int]:
    """Every ``*seed`` setting of a resolved config (a ``model_dump``), by its dotted key."""
    found: dict[str, int] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            found.update(config_seeds(value, dotted + "."))
        elif key.endswith("seed") and isinstance(value, int):
            found[dotted] = value
    return found


def summary(env: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) rows for the report and the model card."""
    tool = env["tunesmith"]
    commit = tool["git_commit"]
    modified = ", modified" if tool["git_dirty"] else ""
    version = tool["version"] + (f" (commit {commit[:12]}{modified})" if commit else "")
    cpu = env["cpu"]
    flags = ", ".join(cpu["flags"] or []) or "none of " + ", ".join(CPU_FLAGS)
    gpus = env["gpu"]
    gpu = "; ".join(f"{g['name']} ({g['memory_gib']} GiB, driver {g['driver'] or '?'}, CUDA {g['cuda']})" for g in gpus)
    rows = [
        ("tunesmith", version),
        ("python", f"{env['python']} on {env['platform']}"),
        ("libraries", ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v)),
        ("CPU", f"{cpu['model']}, {cpu['threads']} torch threads of {cpu['logical_cpus']} CPUs; {flags}"),
        ("GPU", gpu or "none"),
        ("seeds", ", ".join(f"{k} {v}" for k, v in env["seeds"].items()) or "none"),
        *(
            [("precision", f"{env['precision']['name']} ({env['precision']['reason']})")]
            if env.get("precision")
            else []
        ),
        ("recorded", env["recorded"]),
    ]
    if env["missing"]:
        rows.append(("not recorded", "; ".join(env["missing"])))
    return rows


def _tunesmith(missing: list[str]) -> dict[str, Any]:
    info: dict[str, Any] = {"version": importlib.metadata.version("tunesmith"), "git_commit": None, "git_dirty": None}
    checkout = Path(__file__).resolve().parents[3]  # src/tunesmith/core/environment.py -> the repository
    if not (checkout / ".git").exists():
        missing.append("git commit: tunesmith is not installed from a git checkout")
        return info
    head = _output(["git", "-C", str(checkout), "rev-parse", "HEAD"], "git commit", missing)
    if head is None:
        return info
    status = _output(["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"], "git", missing)
    info["git_commit"], info["git_dirty"] = head.strip(), None if status is None else bool(status.strip())
    return info


def _packages(missing: list[str]) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
            if name in ("trl", "deepspeed"):
                continue  # optional extras: absent is a normal state, not a gap in the record
            missing.append(f"{name}: not installed")
    return versions


def cpu_flags() -> set[str]:
    """The CPU features of ``CPU_FLAGS`` this processor has (empty where /proc/cpuinfo cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "flags":
                return set(CPU_FLAGS) & set(value.split())
    except OSError:
        pass
    return set()


def _cpu(missing: list[str]) -> dict[str, Any]:
    import torch

    model, flags = None, None
    try:
        info = Path("/proc/cpuinfo").read_text()
        model = next(
            (line.partition(":")[2].strip() for line in info.splitlines() if line.startswith("model name")), None
        )
        present = cpu_flags()
        flags = [f for f in CPU_FLAGS if f in present]
    except OSError:
        missing.append("CPU model and flags: /proc/cpuinfo is not readable on this system")
    return {
        "model": model or platform.processor() or platform.machine(),
        "flags": flags,
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "logical_cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }


def _gpus(missing: list[str]) -> list[dict[str, Any]]:
    import torch

    if not torch.cuda.is_available():
        return []
    driver = _nvidia_driver(missing)
    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        gpus.append(
            {
                "name": props.name,
                "memory_gib": round(props.total_memory / 2**30, 1),
                "driver": driver,
                "cuda": torch.version.cuda,
            }
        )
    return gpus


def _nvidia_driver(missing: list[str]) -> str | None:
    out = _output(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], "GPU driver", missing)
    return out.strip().splitlines()[0] if out and out.strip() else None


def _output(command: list[str], what: str, missing: list[str]) -> str | None:
    """A command's stdout; None, with the reason added to ``missing``, when it is not installed or fails."""
    if shutil.which(command[0]) is None:
        missing.append(f"{what}: the {command[0]} command is not installed")
        return None
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        missing.append(f"{what}: {command[0]} failed ({exc})")
        return None


if __name__ == "__main__":  # python -m tunesmith.core.environment: what a run here would record
    import json

    json.dump(collect({}), sys.stdout, indent=2)
    print()
