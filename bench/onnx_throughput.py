"""MiniLM classification throughput on the CPU: the ONNX graph tunesmith exports, run by onnxruntime, against the
PyTorch model a user would otherwise run (``transformers``, ``torch.inference_mode``), same threads and batches:

    HF_HUB_OFFLINE=1 .venv/bin/python bench/onnx_throughput.py [--threads 2] [--texts 256] [--repeats 5]

The model is the packaged all-MiniLM-L6-v2 (``minilm-l6``) with a 2-class head (seeded; its weights do not change
the arithmetic). The texts are SST-2 dev sentences, tokenized once beforehand (padding to the longest of each
batch, at most 128 tokens) so both backends time the model alone. For each batch size, one warm-up pass, then
``--repeats`` timed passes over ``--texts`` sentences per backend, alternated; reports sentences/s (median, min,
max). Appends one JSON line per batch size to bench/results/onnx_throughput.jsonl.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers.paths import SST2  # noqa: E402

RESULTS = REPO / "bench" / "results" / "onnx_throughput.jsonl"


def cpu() -> dict[str, str]:
    fields = {}
    for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("Model name", "CPU(s)", "Flags"):
            fields[key.strip()] = value.strip()
    flags = fields.get("Flags", "").split()
    interesting = [f for f in flags if f.startswith(("avx", "amx", "fma", "vnni")) or f == "f16c"]
    return {"model": fields.get("Model name", platform.processor()), "cpus": fields.get("CPU(s)", "?"),
            "flags": " ".join(interesting)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import numpy as np
    import onnxruntime
    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tunesmith.models.resolve import resolve_model
    from tunesmith.ship.onnx_export import export_graph
    from tunesmith.ship.onnx_runtime import session

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    location = resolve_model("minilm-l6").location
    tokenizer = AutoTokenizer.from_pretrained(location)
    model = AutoModelForSequenceClassification.from_pretrained(location, num_labels=2).eval()
    lines = (SST2 / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]
    texts = [line.split("\t")[0] for line in lines][: args.texts]
    inputs = ["input_ids", "attention_mask", "token_type_ids"]
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        started = time.perf_counter()
        export_graph(model, inputs, dict(tokenizer(texts[:2], padding=True, return_tensors="pt")), path)
        export_s = time.perf_counter() - started
        ort = session(path, threads=args.threads)

        def batches(size: int) -> list[dict]:
            return [
                dict(tokenizer(texts[i : i + size], padding=True, truncation=True, max_length=128, return_tensors="pt"))
                for i in range(0, len(texts), size)
            ]

        def run_torch(encoded: list[dict]) -> list:
            with torch.inference_mode():
                return [model(**b).logits for b in encoded]

        def run_onnx(encoded: list[dict]) -> list:
            return [ort.run(["logits"], {k: v.numpy() for k, v in b.items()})[0] for b in encoded]

        for size in (int(s) for s in args.batch_sizes.split(",")):
            encoded = batches(size)
            expected, got = run_torch(encoded), run_onnx(encoded)  # warm-up, and the parity on these texts
            diff = max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected, strict=True))
            same = all((g.argmax(-1) == e.numpy().argmax(-1)).all() for g, e in zip(got, expected, strict=True))
            rates: dict[str, list[float]] = {"torch": [], "onnx": []}
            for _ in range(args.repeats):
                for name, fn in (("torch", run_torch), ("onnx", run_onnx)):
                    started = time.perf_counter()
                    fn(encoded)
                    rates[name].append(len(texts) / (time.perf_counter() - started))
            record = {
                "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "command": "bench/onnx_throughput.py " + " ".join(sys.argv[1:]),
                "cpu": cpu(),
                "threads": args.threads,
                "versions": {
                    "torch": torch.__version__,
                    "onnxruntime": onnxruntime.__version__,
                    "transformers": transformers.__version__,
                },
                "seed": args.seed,
                "model": "minilm-l6 (all-MiniLM-L6-v2) + 2-class head",
                "texts": f"SST-2 dev, first {len(texts)}",
                "batch_size": size,
                "repeats": args.repeats,
                "export_s": round(export_s, 1),
                "max_logit_diff": diff,
                "same_argmax": bool(same),
                **{
                    f"{name}_sentences_per_s": {
                        "median": round(statistics.median(r), 1),
                        "min": round(min(r), 1),
                        "max": round(max(r), 1),
                    }
                    for name, r in rates.items()
                },
                "speedup_median": round(statistics.median(rates["onnx"]) / statistics.median(rates["torch"]), 2),
                "load_average": {
                    "start": [round(x, 2) for x in load_start],
                    "end": [round(x, 2) for x in os.getloadavg()],
                },
            }
            print(json.dumps(record), flush=True)
            with RESULTS.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
