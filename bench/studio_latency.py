"""The studio's latency, on a real `uvicorn` on loopback (the studio in a thread of this process, as the tests run it):

    HF_HUB_OFFLINE=1 .venv/bin/python bench/studio_latency.py [--runs 100] [--loads 30] [--steps 150]

- page load with ``--runs`` runs in the workspace: half of them jobs of the studio's jobs store (queued, as the
  store holds them), half run directories made with the CLI under ``runs/`` (config, state and a 200-step
  metrics.jsonl each); the time from request to the last byte of the Runs page, the run list the pickers use, and
  the other pages, measured by the client on loopback (so server time plus a loopback round trip);
- live curve delay: a job of the tiny random Llama of the tests (``--steps`` steps) launched through the studio's
  API and run by its worker thread; from a step's line appearing in the run's metrics.jsonl (the file watched
  every 5 ms) to its point arriving in the run page's server-sent events stream.

Prints a JSON summary (median, 95th percentile and max) for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers.jobs import chat_file  # noqa: E402
from tests.helpers.models import build_tiny_llama, build_tiny_tokenizer  # noqa: E402
from tests.studio.conftest import start_studio  # noqa: E402

PAGES = ("/runs", "/api/runs/list", "/api/playground/models", "/data", "/new", "/compare", "/playground", "/ship")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"median_ms": round(1000 * statistics.median(ordered), 1), "p95_ms": round(1000 * p95, 1),
            "max_ms": round(1000 * ordered[-1], 1), "n": len(ordered)}  # fmt: skip


def fill_workspace(workspace: Path, model: Path, n: int) -> None:
    """``n`` runs: half jobs in the studio's store, half CLI run directories with a 200-step curve."""
    import yaml

    from tunesmith.jobs.service import create_local_job
    from tunesmith.jobs.store import connect
    from tunesmith.studio.context import OWNER

    data = chat_file(workspace / "chat.jsonl", 16)
    config = {"model": {"name": str(model)}, "data": {"train": str(data)}, "training": {"max_steps": 200},
              "eval": {"enabled": False}}  # fmt: skip
    store = connect(workspace / "tunesmith-jobs", None)
    try:
        for i in range(n // 2):
            create_local_job(store, OWNER, config, {"name": f"job-{i}"})
    finally:
        store.close()
    for i in range(n - n // 2):
        folder = workspace / "runs" / f"cli-{i:03d}"
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_text(yaml.safe_dump(config | {"output": {"name": folder.name}}))
        (folder / "state.json").write_text(json.dumps({"stages": {"prepare": {"rows": {"train": 16}}, "train": {}}}))
        rows = [{"step": s, "train_loss": 6.0 - s / 100, "lr": 2e-4, "elapsed_s": s / 10} for s in range(1, 201)]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (folder / "model").mkdir()


def page_loads(url: str, loads: int) -> dict[str, dict[str, float]]:
    import httpx

    out = {}
    with httpx.Client(base_url=url, timeout=60) as client:
        for path in PAGES:
            client.get(path).raise_for_status()  # warm: imports, template compilation
            times = []
            for _ in range(loads):
                started = time.perf_counter()
                response = client.get(path)
                response.raise_for_status()
                times.append(time.perf_counter() - started)
            out[path] = summary(times)
    return out


def watch_file(path: Path, seen: dict[int, float], stop: threading.Event) -> None:
    offset = 0
    while not stop.is_set():
        if path.is_file():
            with path.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
            chunk = chunk[: chunk.rfind(b"\n") + 1]
            offset += len(chunk)
            now = time.perf_counter()
            for line in chunk.splitlines():
                row = json.loads(line)
                if isinstance(row.get("step"), int):
                    seen.setdefault(row["step"], now)
        time.sleep(0.005)


def curve_delay(url: str, workspace: Path, model: Path, steps: int) -> dict[str, object]:
    import httpx

    data = chat_file(workspace / "live.jsonl", 32)
    values = {"model.name": str(model), "data.train": str(data), "training.max_steps": steps, "training.batch_size": 4,
              "training.max_seq_len": 64, "eval.enabled": False, "output.name": "live"}  # fmt: skip
    launched = httpx.post(f"{url}/api/new/launch", json={"values": values}, timeout=60)
    launched.raise_for_status()
    key = launched.json()["job"]
    metrics = workspace / "tunesmith-jobs" / "runs" / key / "metrics.jsonl"
    in_file: dict[int, float] = {}
    on_page: dict[int, float] = {}
    stop = threading.Event()
    watcher = threading.Thread(target=watch_file, args=(metrics, in_file, stop), daemon=True)
    watcher.start()
    event = ""
    with httpx.stream("GET", f"{url}/api/runs/stream", params={"key": key}, timeout=600) as response:
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "points":
                now = time.perf_counter()
                for point in json.loads(line[6:]):
                    on_page.setdefault(point["step"], now)
            elif line.startswith("data: ") and event == "end":
                break
    time.sleep(0.1)
    stop.set()
    watcher.join()
    delays = [on_page[s] - in_file[s] for s in on_page if s in in_file]
    return {"steps": len(on_page), "matched": len(delays), **summary(delays)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--loads", type=int, default=30)
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="studio-bench-") as tmp:
        workspace = Path(tmp)
        model = workspace / "tiny"
        model.mkdir()
        build_tiny_tokenizer(model)
        from transformers import AutoTokenizer

        build_tiny_llama(model, len(AutoTokenizer.from_pretrained(model)))
        fill_workspace(workspace, model, args.runs)
        server, thread, url = start_studio(workspace, workers=0)  # the listed jobs stay queued
        try:
            loads = page_loads(url, args.loads)
        finally:
            server.should_exit = True  # type: ignore[attr-defined]
            thread.join(timeout=60)
        live_space = workspace / "live"
        live_space.mkdir()
        shutil.copytree(model, live_space / "tiny")  # a link out of the workspace would be refused
        server, thread, url = start_studio(live_space, workers=1)
        try:
            live = curve_delay(url, live_space, live_space / "tiny", args.steps)
        finally:
            server.should_exit = True  # type: ignore[attr-defined]
            thread.join(timeout=120)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "runs_in_workspace": args.runs,
        "page_load": loads,
        "live_curve_delay": live,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
