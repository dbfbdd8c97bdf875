"""An OpenAI-compatible HTTP server for trained runs (FastAPI + uvicorn)."""

from __future__ import annotations

import sys

from tunesmith.pipeline.run import Run


def serve(
    runs: list[Run],
    host: str,
    port: int,
    api_key: str | None,
    max_tokens: int,
    max_body_bytes: int,
    force: bool = False,
) -> None:
    """Load the runs (LoRA adapters on one base share it) and serve them until interrupted; a run whose evaluation
    gate fails is refused (``GateFailed``) unless ``force``."""
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
    app = create_app(pool, Limits(max_tokens=max_tokens, max_body_bytes=max_body_bytes), api_key=api_key)
    auth = "bearer key required" if api_key else "no API key: anyone who can reach it may use it"
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        print(f"warning: binding {host} without --api-key exposes the models to the network", file=sys.stderr)
    print(f"serving {', '.join(pool.models)} on http://{host}:{port}/v1 ({auth})", file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)
