"""Serving throughput: 16 concurrent clients against `tunesmith serve` of a SmolLM2-135M LoRA run, the batched
server (``--max-batch 16``) against the serial one (``--max-batch 1``, what the server did before) in the same run.

Both servers run at once (only one is sent requests at a time) and the rounds alternate serial, batched, so both
see the same machine load. Each round: every client sends one greedy chat completion (a fixed instruction from the
self-instruct seed tasks, fixed ``max_tokens``) at the same moment; the round's tokens/s is the generated tokens
over the round's wall time, and each request's latency is counted from the common start. The answers of the two
servers are compared prompt by prompt.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/serve_throughput.py [--run DIR] [--clients 16] [--max-tokens 32]
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
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
SEED_TASKS = Path(os.environ.get("TUNESMITH_SHARED", REPO.parent / "shared")) / "datasets/self_instruct_seed_tasks"
RESULTS = REPO / "bench/results/serve_throughput.jsonl"


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line), platform.processor())
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags")), [])
    simd = [f for f in flags if f.startswith(("avx", "amx", "fma", "sse4"))]
    return {"cpu": model, "cores": os.cpu_count(), "cpu_flags": " ".join(simd)}


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def prompts(n: int) -> list[str]:
    rows = [json.loads(line) for line in (SEED_TASKS / "seed_tasks.jsonl").read_text().splitlines()[:n]]
    texts = []
    for row in rows:
        given = row["instances"][0]["input"]
        texts.append(row["instruction"] + (f"\n\n{given}" if given else ""))
    return texts


def train_run(folder: Path) -> Path:
    """A one-step LoRA run of SmolLM2-135M on SST-2 (the model is the point here, not the training)."""
    import yaml

    config = {
        "model": {"name": "smollm2-135m"},
        "data": {
            "train": str(REPO / "examples/data/sst2/train.tsv"),
            "test": str(REPO / "examples/data/sst2/dev.tsv"),
            "prompt_template": "Sentiment of: {sentence}",
            "completion_template": "{label}",
            "label_names": {0: "negative", 1: "positive"},
            "train_rows": 8,
            "test_rows": 4,
        },
        "training": {"max_steps": 1, "batch_size": 2, "max_seq_len": 64, "learning_rate": 1e-5},
        "eval": {"enabled": False},
        "output": {"dir": str(folder / "runs"), "name": "smollm2-lora"},
    }
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    exe = Path(sys.executable).with_name("tunesmith")
    subprocess.run([str(exe), "train", str(path)], check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return folder / "runs/smollm2-lora"


def start(run: Path, port: int, max_batch: int, log: Path) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).with_name("tunesmith")
    command = [str(exe), "serve", str(run), "--force", "--port", str(port), "--max-batch", str(max_batch)]
    with log.open("w") as handle:
        return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ})


def wait_ready(port: int, process: subprocess.Popen[bytes], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server on port {port} exited with {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit(f"the server on port {port} did not start")


def round_(port: int, model: str, texts: list[str], max_tokens: int) -> dict[str, Any]:
    """Every client sends its request at once; returns tokens/s, latencies and the answers."""
    gate = threading.Barrier(len(texts) + 1)
    answers: list[Any] = [None] * len(texts)
    latencies = [0.0] * len(texts)
    tokens = [0] * len(texts)

    def client(i: int) -> None:
        body = {"model": model, "messages": [{"role": "user", "content": texts[i]}], "temperature": 0,
                "max_tokens": max_tokens}  # fmt: skip
        with httpx.Client(timeout=1800) as http:
            gate.wait()
            start = time.perf_counter()
            reply = http.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body)
            latencies[i] = time.perf_counter() - start
        reply.raise_for_status()
        data = reply.json()
        answers[i] = (data["choices"][0]["message"]["content"], data["choices"][0]["finish_reason"])
        tokens[i] = data["usage"]["completion_tokens"]

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(texts))]
    for thread in threads:
        thread.start()
    gate.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    ordered = sorted(latencies)
    return {
        "tokens": sum(tokens),
        "wall_s": round(wall, 2),
        "tokens_per_s": round(sum(tokens) / wall, 2),
        "p50_s": round(statistics.median(ordered), 2),
        "p95_s": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 2),
        "answers": answers,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="a trained SmolLM2 run (default: train a one-step LoRA run)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    command = "bench/serve_throughput.py " + " ".join(sys.argv[1:])
    texts = prompts(args.clients)
    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    run = args.run or train_run(work)
    import torch
    import transformers
    from tests.helpers.cli import free_port

    ports = {1: free_port(), args.max_batch: free_port()}
    servers = {b: start(run, port, b, work / f"serve-{b}.log") for b, port in ports.items()}
    load_start = load()
    try:
        for batch, port in ports.items():
            wait_ready(port, servers[batch])
        model = httpx.get(f"http://127.0.0.1:{ports[1]}/v1/models").json()["data"][0]["id"]
        rounds: dict[int, list[dict[str, Any]]] = {b: [] for b in ports}
        for repeat in range(args.repeats):
            for batch, port in ports.items():
                result = round_(port, model, texts, args.max_tokens)
                rounds[batch].append(result)
                print(f"repeat {repeat} max_batch {batch}: {result['tokens_per_s']} tok/s, p50 {result['p50_s']} s, "
                      f"p95 {result['p95_s']} s (load {load()})", flush=True)  # fmt: skip
    finally:
        for process in servers.values():
            process.terminate()
            process.wait(timeout=30)
    serial = rounds[1]
    equal = [
        sum(a == b for a, b in zip(serial[0]["answers"], r["answers"], strict=True)) for r in rounds[args.max_batch]
    ]
    stable = all(r["answers"] == serial[0]["answers"] for r in serial)
    record = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": command,
        **machine(),
        "torch_threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "model": "SmolLM2-135M-Instruct + LoRA (one step), fp32",
        "clients": args.clients,
        "max_tokens": args.max_tokens,
        "greedy": True,
        "load_average_at_start": load_start,
        "load_average_at_end": load(),
        "serial": [{k: v for k, v in r.items() if k != "answers"} for r in serial],
        "batched": [{k: v for k, v in r.items() if k != "answers"} for r in rounds[args.max_batch]],
        "max_batch": args.max_batch,
        "answers_equal_to_serial": equal,
        "serial_answers_stable": stable,
        "speedup_median": round(
            statistics.median(r["tokens_per_s"] for r in rounds[args.max_batch])
            / statistics.median(r["tokens_per_s"] for r in serial),
            2,
        ),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as handle:
        handle.write(json.dumps(record) + "\n")
    print(json.dumps(record, indent=1))
    batched = rounds[args.max_batch][0]["answers"]
    differing = [i for i, (a, b) in enumerate(zip(serial[0]["answers"], batched, strict=True)) if a != b]
    for i in differing:
        print(f"differs on prompt {i}:\n  serial:  {serial[0]['answers'][i]!r}\n  batched: "
              f"{batched[i]!r}")  # fmt: skip


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
