"""The jobs service's own costs, measured with the official openai client against `tunesmith serve --jobs` (one
worker thread in the server, SQLite store) on a tiny random Llama built from a config:

    HF_HUB_OFFLINE=1 .venv/bin/python bench/jobs_latency.py [--repeats 3] [--steps 100]

- create -> running: from the create call's return to the job's status reading ``running`` (an idle worker polls
  the queue every second, so this is up to a second plus the claim);
- create -> first step: until the first metrics event is listed (adds the `tunesmith run` start-up);
- event latency: from a step's line appearing in the run's metrics.jsonl (the file watched every 5 ms) to its
  metrics event appearing in ``GET .../events`` (polled every 20 ms);
- overhead on training: the training stage's seconds of a job (polled every 2 s, as a dashboard would) vs. the
  same config run with `tunesmith run` (no server, no worker) right after it.

Prints a JSON summary (each figure per repeat, median and spread) for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers.jobs import chat_file, jobs_server, wait_for  # noqa: E402
from tests.helpers.models import build_tiny_llama, build_tiny_tokenizer  # noqa: E402


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def watch_file(path: Path, seen: dict[int, float], stop: threading.Event) -> None:
    offset = 0
    while not stop.is_set():
        if path.is_file():
            with path.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
            whole = chunk[: chunk.rfind(b"\n") + 1]
            offset += len(whole)
            for line in whole.splitlines():
                seen.setdefault(json.loads(line)["step"], time.monotonic())
        time.sleep(0.005)


def one_job(service, model: Path, chats: str, steps: int) -> dict[str, float]:
    client = service.client()
    hyper = {"n_epochs": steps // 4, "batch_size": 4, "learning_rate_multiplier": 5}
    job = client.fine_tuning.jobs.create(model=str(model), training_file=chats, hyperparameters=hyper)
    created = time.monotonic()
    in_file: dict[int, float] = {}
    in_api: dict[int, float] = {}
    stop = threading.Event()
    watcher = threading.Thread(
        target=watch_file, args=(service.home / "runs" / job.id / "metrics.jsonl", in_file, stop)
    )
    watcher.start()
    running = None
    while True:
        status = client.fine_tuning.jobs.retrieve(job.id).status
        if status == "running" and running is None:
            running = time.monotonic() - created
        for event in client.fine_tuning.jobs.list_events(job.id, limit=50):
            if event.type == "metrics":
                in_api.setdefault(event.data["step"], time.monotonic())
        if status in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.02)
    stop.set()
    watcher.join()
    assert status == "succeeded", wait_for(client, job.id, "succeeded")
    delays = [in_api[s] - in_file[s] for s in in_api if s in in_file]
    return {
        "create_to_running_s": running,
        "create_to_first_step_s": min(in_api.values()) - created,
        "event_latency_median_s": statistics.median(delays),
        "event_latency_max_s": max(delays),
        **overhead(service, model, chats, steps),
    }


def overhead(service, model: Path, chats: str, steps: int) -> dict[str, float]:
    """Training seconds of a job polled like a dashboard (every 2 s) vs. the same config as a plain run."""
    client = service.client()
    hyper = {"n_epochs": steps // 4, "batch_size": 4, "learning_rate_multiplier": 5}
    job = client.fine_tuning.jobs.create(model=str(model), training_file=chats, hyperparameters=hyper)
    while client.fine_tuning.jobs.retrieve(job.id).status not in ("succeeded", "failed", "cancelled"):
        time.sleep(2)
    job_train = json.loads((service.home / "runs" / job.id / "state.json").read_text())["stages"]["train"]["seconds"]
    config = service.home / "runs" / f"{job.id}.yaml"
    exe = Path(sys.executable).with_name("tunesmith")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    plain = subprocess.run(
        [str(exe), "run", str(config), "--set", f"output.name=plain-{job.id}"], env=env, capture_output=True, text=True
    )
    assert plain.returncode == 0, plain.stderr[-2000:]
    plain_state = service.home / "runs" / f"plain-{job.id}" / "state.json"
    plain_train = json.loads(plain_state.read_text())["stages"]["train"]["seconds"]
    return {
        "train_seconds_job": job_train,
        "train_seconds_plain_run": plain_train,
        "overhead_pct": 100 * (job_train - plain_train) / plain_train,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100, help="Steps per job (16 rows, batch 4).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="jobs-bench-") as folder:
        root = Path(folder)
        model = root / "tiny-llama"
        model.mkdir()
        build_tiny_tokenizer(model)
        from transformers import AutoTokenizer

        build_tiny_llama(model, len(AutoTokenizer.from_pretrained(model)))
        with jobs_server(root / "home") as service:
            with chat_file(root / "train.jsonl").open("rb") as handle:
                chats = service.client().files.create(file=handle, purpose="fine-tune").id
            runs = [one_job(service, model, chats, args.steps) for _ in range(args.repeats)]
    summary = {
        key: {"each": [round(r[key], 3) for r in runs], "median": round(statistics.median(r[key] for r in runs), 3)}
        for key in runs[0]
    }
    print(json.dumps({"date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(), "cores": os.cpu_count(),
                      "steps": args.steps, "repeats": args.repeats, "results": summary}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
