"""The `tunesmith` command line. Errors a user can fix exit with code 2 and no traceback (unless --debug)."""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from tunesmith.cli.data import data_app
from tunesmith.cli.jobs import HomeOpt, StoreOpt, keys_app, worker
from tunesmith.cli.show import out, print_evaluation, print_table
from tunesmith.core.config import load_config
from tunesmith.core.errors import TrainingPaused, TunesmithError
from tunesmith.core.logs import quiet_libraries

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Fine-tune language models on your own data: prepare -> train -> evaluate.",
)
config_app = typer.Typer(no_args_is_help=True, help="Inspect run configurations.")
app.add_typer(config_app, name="config")
app.add_typer(data_app, name="data")
app.add_typer(keys_app, name="keys")
app.command()(worker)
err = Console(stderr=True, soft_wrap=True)

ConfigArg = typer.Argument(..., exists=False, help="Run configuration (YAML).")
SetOpt = typer.Option([], "--set", "-s", help="Override a config key: --set training.learning_rate=1e-4 (repeatable).")
ResumeOpt = typer.Option(False, "--resume", help="Continue an interrupted training from its newest checkpoint.")


@app.command()
def run(
    config: Path = ConfigArg,
    overrides: list[str] = SetOpt,
    force: bool = typer.Option(False, "--force", help="Start the run over even if it finished."),
    resume: bool = ResumeOpt,
    from_run: Path | None = typer.Option(
        None, "--from", help="Continue an earlier run's tuned model on this config's data (model.from_run)."
    ),
    replay: float | None = typer.Option(
        None, "--replay", min=0.0, max=0.99, help="With --from: fraction of training rows replayed from that run."
    ),
) -> None:
    """Run every stage: prepare -> train -> evaluate; print base vs tuned metrics."""
    from tunesmith.core.config import load_config
    from tunesmith.pipeline.run import Run

    if from_run is not None:  # JSON-quoted so any path reads back as a YAML string
        overrides = [*overrides, f"model.from_run={json.dumps(str(from_run.resolve()))}"]
    if replay is not None:
        overrides = [*overrides, f"data.replay={replay}"]
    cfg = load_config(config, overrides)
    if cfg.stages:
        from tunesmith.pipeline.sequential import run_stages

        run_stages(cfg, force=force, resume=resume)
        last = cfg.run_dir / "stages" / f"{len(cfg.stages)}-{cfg.stages[-1].name}" / "eval"
        if (last / "metrics.json").is_file():
            print_evaluation(last)
        return
    run_ = Run(cfg)
    if run_.run(force=force, resume=resume):
        print_evaluation(run_.dir.eval)


@app.command()
def prepare(config: Path = ConfigArg, overrides: list[str] = SetOpt) -> None:
    """Load, validate and split the data into the run directory."""
    _stage(config, overrides, "prepare")


@app.command()
def train(config: Path = ConfigArg, overrides: list[str] = SetOpt, resume: bool = ResumeOpt) -> None:
    """Train (preparing the data first if needed) and save the model."""
    _stage(config, overrides, "prepare", "train", resume=resume)


@app.command("eval")
def evaluate(
    targets: list[Path] = typer.Argument(..., help="A run (its directory or config file); several with --ensemble."),
    split: str = typer.Option("test", "--split", help="Prepared split to evaluate on: test or validation."),
    data: Path | None = typer.Option(None, "--data", help="Evaluate on this file instead (read like the run's data)."),
    ensemble: bool = typer.Option(False, "--ensemble", help="Evaluate the ensemble of the given (evaluated) runs."),
    soup: str | None = typer.Option(
        None, "--soup", help="With --ensemble: also merge LoRA adapters: linear|ties|dare."
    ),
) -> None:
    """Evaluate base and tuned model (or an ensemble of runs) and print the comparison."""
    if ensemble:
        from tunesmith.ship.ensemble import ensemble_runs

        runs = [open_run(t) for t in targets]
        out_dir = runs[0].dir.root.parent / ("ensemble-" + "+".join(r.dir.root.name for r in runs))
        print_table("Ensemble on the test split", ensemble_runs(runs, out_dir, soup))
        err.print(f"written to {out_dir}")
        return
    if len(targets) != 1:
        raise TunesmithError("eval takes one run, or several with --ensemble")
    run_ = open_run(targets[0])
    if data is not None:
        out_dir = run_.evaluate_file(data)
    else:
        run_.evaluate() if split == "test" else run_.evaluate_split(split)
        out_dir = run_.dir.eval if split == "test" else run_.dir.root / f"eval-{split}"
    print_evaluation(out_dir)
    err.print(f"written to {out_dir}")


@app.command()
def report(config: Path = ConfigArg, overrides: list[str] = SetOpt) -> None:
    """Write the run's self-contained report.html (config, data, training curves, evaluation)."""
    from tunesmith.pipeline.run import Run

    run_ = Run.from_file(config, overrides)
    run_.open()
    run_.report()


RunArg = typer.Argument(..., help="A trained run: its directory (runs/<name>) or the config file that made it.")


@app.command()
def export(
    run_path: Path = RunArg,
    out_dir: Path = typer.Option(..., "--out", help="Folder to create (must not exist)."),
    merge: bool = typer.Option(False, "--merge", help="Merge a LoRA adapter into the base weights."),
    dtype: str = typer.Option("fp32", "--dtype", help="Weight dtype of the export: fp32, bf16 or fp16."),
    gguf: str | None = typer.Option(
        None,
        "--gguf",
        help=(
            "Also write a GGUF file (f16 or q8_0; Llama, Qwen2, Qwen3, Gemma 1/2/3, Phi-3, GPT-2), checked in "
            "llama.cpp."
        ),
    ),
    force: bool = typer.Option(
        False, "--force", help="Export even if the run's evaluation gate failed (card says so)."
    ),
    onnx: bool = typer.Option(False, "--onnx", help="Also write onnx/model.onnx, checked with onnxruntime."),
) -> None:
    """Export a trained run of any task (adapter, or merged with --merge; a task head as its AutoModelFor... folder),
    verified against the run's model, with a model card."""
    from tunesmith.ship.export import export_run

    result = export_run(open_run(run_path), out_dir, merge=merge, dtype=dtype, gguf=gguf, force=force, onnx=onnx)
    if result.gate is not None and not result.gate["passed"]:
        err.print("[yellow]warning:[/] exported with --force although the evaluation gate failed (see README.md)")
    err.print(
        f"[green]exported[/] {result.task} {result.kind} model ({result.dtype}) to {result.out}; loaded back and "
        f"compared: max |logit difference| {result.max_logit_diff:.2e}"
        + (f"; GGUF {result.gguf}" if result.gguf else "")
    )
    if result.gguf:
        from tunesmith.ship.gguf_check import describe

        llama_cpp = result.checks["gguf"]["llama_cpp"]
        err.print(("[yellow]note:[/] " if "skipped" in llama_cpp else "") + describe(llama_cpp))
    if "onnx" in result.checks:
        figures = result.checks["onnx"]
        err.print(
            f"ONNX {out_dir / figures['file']}: onnxruntime vs PyTorch max |logit difference| "
            f"{figures['max_logit_diff']:.2e}, same argmax"
            + (", same greedy tokens" if figures.get("same_greedy_tokens") else "")
        )


@app.command()
def serve(
    run_paths: list[Path] = typer.Argument(None, help="Trained runs to serve (directories or config files)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; the default serves this machine only."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    api_key: str | None = typer.Option(
        None, "--api-key", envvar="TUNESMITH_API_KEY", help="Require 'Authorization: Bearer KEY' on /v1/*."
    ),
    max_tokens: int = typer.Option(512, "--max-tokens", min=1, help="Largest max_tokens a request may ask for."),
    max_body_bytes: int = typer.Option(1_048_576, "--max-body-bytes", min=1, help="Largest request body accepted."),
    force: bool = typer.Option(False, "--force", help="Serve runs even if their evaluation gate failed."),
    jobs: bool = typer.Option(False, "--jobs", help="Also serve OpenAI's files and fine-tuning jobs API."),
    home: Path = HomeOpt,
    store: str | None = StoreOpt,
    workers: int = typer.Option(1, "--workers", min=0, help="With --jobs: worker threads in this process."),
    max_upload_bytes: int = typer.Option(512 * 2**20, "--max-upload-bytes", min=1, help="Largest file upload."),
    max_batch: int = typer.Option(
        16, "--max-batch", min=1, help="Requests per model decoded together; 1 answers one at a time."
    ),
    max_queue: int = typer.Option(
        64, "--max-queue", min=0, help="Requests per model waiting for a place in the batch; more get 503."
    ),
) -> None:
    """Serve runs over an OpenAI-compatible HTTP API; each run is a model id (its run name). With --jobs, also
    fine-tuning jobs (keys from `tunesmith keys create`)."""
    from tunesmith.server import serve as serve_runs

    if not run_paths and not jobs:
        raise TunesmithError("name the runs to serve, or add --jobs to serve fine-tuning jobs")
    if jobs and api_key:
        raise TunesmithError("--jobs uses the keys of `tunesmith keys create`; leave out --api-key")
    connected = None
    if jobs:
        from tunesmith.jobs.store import connect

        connected = connect(home, store)
    serve_runs(
        [open_run(p) for p in run_paths or []], host, port, api_key, max_tokens, max_body_bytes, force=force,
        jobs=connected, workers=workers, max_upload_bytes=max_upload_bytes, max_batch=max_batch, max_queue=max_queue,
    )  # fmt: skip


@app.command()
def studio(
    workspace: Path = typer.Option(Path("."), "--workspace", help="The one folder the studio reads and writes."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; the default serves this machine only."),
    port: int = typer.Option(7860, "--port", help="TCP port."),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar="TUNESMITH_STUDIO_TOKEN",
        help="Require this token (made up when --host is not loopback).",
    ),
    allow_host: list[str] = typer.Option([], "--allow-host", help="Another host name the studio is reached by."),
    store: str | None = StoreOpt,
    workers: int = typer.Option(1, "--workers", min=0, help="Worker threads running the studio's jobs."),
    max_upload_bytes: int = typer.Option(256 * 2**20, "--max-upload-bytes", min=1, help="Largest data upload."),
) -> None:
    """The browser studio: data, new runs, live runs, compare, playground with blind A/B, ship, annotate."""
    import secrets

    from tunesmith.studio.app import serve as serve_studio
    from tunesmith.studio.context import Settings
    from tunesmith.studio.security import is_loopback

    if token is None and not is_loopback(host):
        token = secrets.token_urlsafe(24)
    settings = Settings(
        workspace=workspace, host=host, token=token, allow_hosts=tuple(allow_host), store=store, workers=workers,
        max_upload_bytes=max_upload_bytes,
    )  # fmt: skip
    shown = "localhost" if host in ("0.0.0.0", "::") else host
    address = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    err.print(f"tunesmith studio on {address} (workspace {workspace.resolve()}; Ctrl+C stops it)", highlight=False)
    serve_studio(settings, port)


@app.command()
def predict(
    run_path: Path = RunArg,
    input_path: Path = typer.Option(..., "--input", help="Rows to answer: JSONL, JSON, CSV or TSV."),
    output_path: Path = typer.Option(..., "--output", help="JSONL file of predictions; rows already in it are kept."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Default: the run's eval.batch_size."),
    max_new_tokens: int | None = typer.Option(
        None, "--max-new-tokens", min=1, help="Default: the run's eval.max_new_tokens."
    ),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, help="0 = greedy; higher samples more freely."),
    top_p: float = typer.Option(1.0, "--top-p", min=0.0, max=1.0, help="Nucleus sampling (with --temperature > 0)."),
    seed: int | None = typer.Option(None, "--seed", help="Make sampled predictions repeatable."),
    backend: str = typer.Option("torch", "--backend", help="torch, or onnx (onnxruntime; RUN or an --onnx export)."),
) -> None:
    """Predictions for every row of a file (greedy by default; labels with probabilities for classification
    runs); rerun the same command to resume after an interruption."""
    from tunesmith.ship.onnx_export import onnx_backend
    from tunesmith.ship.predict import Sampling, predict_file

    if backend not in ("torch", "onnx"):
        raise TunesmithError(f"--backend {backend!r}: expected torch or onnx")
    if backend == "onnx" and temperature > 0:
        raise TunesmithError("--temperature: the onnx backend decodes greedily; drop it or use --backend torch")
    run_, load = onnx_backend(run_path, open_run) if backend == "onnx" else (open_run(run_path), None)
    summary = predict_file(
        run_,
        input_path,
        output_path,
        batch_size=batch_size or run_.config.eval.batch_size,
        max_new_tokens=max_new_tokens or run_.config.eval.max_new_tokens,
        sampling=Sampling(temperature, top_p, seed),
        load=load,
    )
    err.print(
        f"[green]predict[/]: {summary.written} rows written, {summary.skipped} already done"
        + (f", {summary.errors} with errors" if summary.errors else "")
        + f"; {output_path}"
    )


@app.command()
def chat(
    run_path: Path = RunArg,
    system: str | None = typer.Option(None, "--system", help="System prompt (default: the run's task.system_prompt)."),
    compare: bool = typer.Option(False, "--compare", help="Also answer with the base model, labelled, turn by turn."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", min=1, help="Longest reply, in tokens."),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, help="0 = greedy; higher samples more freely."),
    top_p: float = typer.Option(1.0, "--top-p", min=0.0, max=1.0, help="Nucleus sampling (with --temperature > 0)."),
) -> None:
    """Chat with a trained run in the terminal (streamed replies, history, /reset, /exit)."""
    from tunesmith.ship.chat import chat_loop
    from tunesmith.ship.inference import Sampling

    sampling = Sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
    chat_loop(open_run(run_path), sampling, system=system, compare=compare)


@app.command()
def sweep(
    config: Path = ConfigArg,
    trials: int = typer.Option(..., "--trials", "-n", min=1, help="Finished trials the study should have."),
    space: Path | None = typer.Option(None, "--space", help="Sweep file (default: the config's `sweep:` section)."),
    storage: str | None = typer.Option(
        None,
        "--storage",
        help="Database URL the study lives in, shared by every worker: postgresql://USER:PASSWORD@HOST:PORT/DB "
        "(default: SQLite in the sweep folder, one process).",
    ),
    study: str | None = typer.Option(
        None, "--study", help="Study name in the storage, and the sweep folder's (default: the run's name)."
    ),
    workers: int = typer.Option(
        1, "--workers", min=1, help="Worker processes to start on this machine (needs --storage)."
    ),
    overrides: list[str] = SetOpt,
) -> None:
    """Search hyperparameters with Optuna (pruning bad trials); rerun the same command to continue a stopped sweep.

    Start the same command (same --storage and --study) on several machines to share one study."""
    from tunesmith.sweep.search import load_sweep, run_sweep

    run_sweep(load_sweep(config, space, tuple(overrides), study), trials, storage, workers)


@app.command()
def estimate(
    config: Path = ConfigArg,
    overrides: list[str] = SetOpt,
    device: str = typer.Option(None, help="cpu or cuda (default: this machine's)."),
    as_json: bool = typer.Option(False, "--json", help="Print the estimate as JSON."),
) -> None:
    """Predict peak memory and time per epoch of training (prepares the data first if needed)."""
    from tunesmith.pipeline.estimate import estimate_run
    from tunesmith.pipeline.run import Run

    run_ = Run.from_file(config, overrides)
    run_.open()
    result = estimate_run(run_, device)
    cfg = run_.config
    if as_json:
        out.print_json(json.dumps(result.to_dict()))
        return
    parts = ", ".join(f"{k} {v:.2f}" for k, v in result.memory_gib.items())
    out.print(
        f"{cfg.model.name}, method {cfg.method.name}, {result.trainable:,} of {result.parameters:,} parameters "
        f"trainable, on {result.device}\n"
        f"  peak memory ~{result.peak_gib:.2f} GiB ({parts})\n"
        f"  {result.steps_per_epoch} steps per epoch, ~{result.seconds_per_step:.2f} s per step, "
        f"~{result.seconds_per_epoch / 60:.1f} min per epoch ({result.tokens_per_epoch:,} tokens; "
        f"probe {result.probe_tflops:.3f} TFLOP/s)",
        highlight=False,
    )


@config_app.command("show")
def config_show(config: Path = ConfigArg, overrides: list[str] = SetOpt) -> None:
    """Print the resolved config with every default filled in."""
    out.print(load_config(config, overrides).to_yaml(), end="", highlight=False, markup=False)


def _stage(config: Path, overrides: list[str], *stages: str, resume: bool = False) -> None:
    from tunesmith.pipeline.run import Run

    run_ = Run.from_file(config, overrides)
    run_.open()
    for stage in stages:
        if run_.dir.is_done(stage):
            err.print(f"[dim]{stage}: already done, skipping[/]")
        elif stage == "train":
            run_.train(resume=resume)
        else:
            getattr(run_, stage)()


def open_run(path: Path) -> Any:
    """A trained run from its directory, or from the config file that made it."""
    from tunesmith.pipeline.run import Run

    return Run.from_dir(load_config(path).run_dir if path.is_file() else path)


def main() -> None:
    """Console entry point: user errors become a short message and exit code 2."""
    # peft calls a transformers property deprecated in 5.x; the warning is theirs and says nothing to a user.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    debug = "--debug" in sys.argv
    if debug:
        sys.argv.remove("--debug")
    try:
        with quiet_libraries(debug):  # library tables and warnings: runs/<name>/logs/libraries.log
            app()
    except TunesmithError as exc:
        if debug:
            raise
        label = "[yellow]paused:[/]" if isinstance(exc, TrainingPaused) else "[bold red]error:[/]"
        err.print(f"{label} {escape(str(exc))}", highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]; completed stages are kept, rerun the same command to continue")
        sys.exit(130)
    finally:
        _leave_process_group()


def _leave_process_group() -> None:
    """Under `accelerate launch` / `torchrun`: close this process's group and leave without the interpreter's
    teardown, where gloo's worker threads can still release tensors and abort the process ("terminate called
    without an active exception", seen on one rank in about one run of three). Everything is written by then."""
    torch = sys.modules.get("torch")
    if torch is None or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    torch.distributed.destroy_process_group()
    error = sys.exc_info()[1]
    if error is not None and not isinstance(error, SystemExit):
        return  # a crash: let Python print its traceback
    code = 0 if error is None or error.code is None else error.code
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 1)
