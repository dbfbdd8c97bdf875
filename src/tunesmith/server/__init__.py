"""An OpenAI-compatible HTTP server for trained runs (FastAPI + uvicorn)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from tunesmith.jobs.store import Store
from tunesmith.pipeline.run import Run


def serve(
    runs: list[Run],
    host: str,
    port: int,
    api_key: str | None,
    max_tokens: int,
    max_body_bytes: int,
    force: bool = False,
    jobs: Store | None = None,
    workers: int = 1,
    max_upload_bytes: int = 512 * 2**20,
    max_batch: int = 16,
    max_queue: int = 64,
) -> None:
    """Load the runs (LoRA adapters on one base share it) and serve them until interrupted; a run whose evaluation
    gate fails is refused (``GateFailed``) unless ``force``. With ``jobs`` (a store), also serve OpenAI's files and
    fine-tuning API, with ``workers`` worker threads in this process running its jobs. Up to ``max_batch``
    requests per model are decoded together (1: one at a time) and up to ``max_queue`` more wait; beyond that, 503."""
    import uvicorn

    from tunesmith.pipeline.gate import require_gate

    for run in runs:
        gate = require_gate(run, force, "serve")
        if gate is not None and not gate["passed"]:
            name = run.dir.root.name
            print(f"warning: serving {name} with --force although its evaluation gate failed", file=sys.stderr)

    from tunesmith.server.app import Limits, create_app
    from tunesmith.ship.inference import Sampling, chat_prompt, generate, load_pool

    pool = load_pool(runs)
    for served in pool.models.values():  # warm up: the first generate() in a process is several times slower
        if served.generates:
            generate(served, chat_prompt(served, [{"role": "user", "content": "hi"}]), Sampling(max_new_tokens=2))
    face = None
    if jobs is not None:
        from tunesmith.server.ft_models import FineTunedModels
        from tunesmith.server.jobs_api import JobsFace

        jobs.files.clean_temps()
        face = JobsFace(jobs, max_upload_bytes, FineTunedModels(jobs, pool))
    app = create_app(pool, Limits(max_tokens, max_body_bytes, max_batch, max_queue), api_key=api_key, jobs=face)
    auth = "bearer key required" if api_key or jobs else "no API key: anyone who can reach it may use it"
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key and jobs is None:
        print(f"warning: binding {host} without --api-key exposes the models to the network", file=sys.stderr)
    names = ", ".join(pool.models) or "no runs"
    if jobs is not None:
        names += f"; fine-tuning jobs in {jobs.home} ({workers} worker{'s' * (workers != 1)} in this process)"
    print(f"serving {names} on http://{host}:{port}/v1 ({auth})", file=sys.stderr, flush=True)
    with _workers(jobs, workers):
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)


@contextlib.contextmanager
def _workers(store: Store | None, count: int) -> Iterator[None]:
    """Worker threads beside the server (the zero-setup default); on shutdown each pauses its run with a checkpoint
    and puts the job back in the queue."""
    import threading

    from tunesmith.jobs.worker import Worker

    stop = threading.Event()
    threads = [
        threading.Thread(target=Worker(store).run, args=(stop,), name=f"tunesmith-worker-{i}", daemon=True)
        for i in range(count if store is not None else 0)
    ]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=90)
