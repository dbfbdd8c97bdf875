"""The `tunesmith` command line. Errors a user can fix exit with code 2 and no traceback (unless --debug)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tunesmith.config import load_config
from tunesmith.errors import TunesmithError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Fine-tune language models on your own data: prepare -> train -> evaluate.",
)
config_app = typer.Typer(no_args_is_help=True, help="Inspect run configurations.")
app.add_typer(config_app, name="config")
out = Console()
err = Console(stderr=True, soft_wrap=True)

ConfigArg = typer.Argument(..., exists=False, help="Run configuration (YAML).")
SetOpt = typer.Option([], "--set", "-s", help="Override a config key: --set training.learning_rate=1e-4 (repeatable).")


@app.command()
def run(
    config: Path = ConfigArg,
    overrides: list[str] = SetOpt,
    force: bool = typer.Option(False, "--force", help="Start the run over even if it finished."),
) -> None:
    """Run every stage: prepare -> train -> evaluate; print base vs tuned metrics."""
    from tunesmith.run import Run

    metrics = Run.from_file(config, overrides).run(force=force)
    if metrics:
        print_metrics(metrics)


@app.command()
def prepare(config: Path = ConfigArg, overrides: list[str] = SetOpt) -> None:
    """Load, validate and split the data into the run directory."""
    _stage(config, overrides, "prepare")


@app.command()
def train(config: Path = ConfigArg, overrides: list[str] = SetOpt) -> None:
    """Train (preparing the data first if needed) and save the model."""
    _stage(config, overrides, "prepare", "train")


@app.command("eval")
def evaluate(config: Path = ConfigArg, overrides: list[str] = SetOpt) -> None:
    """Evaluate the trained model and the base model on the test split."""
    from tunesmith.run import Run

    run_ = Run.from_file(config, overrides)
    run_.open()
    print_metrics(run_.evaluate())


@config_app.command("show")
def config_show(config: Path = ConfigArg, overrides: list[str] = SetOpt) -> None:
    """Print the resolved config with every default filled in."""
    out.print(load_config(config, overrides).to_yaml(), end="", highlight=False, markup=False)


def _stage(config: Path, overrides: list[str], *stages: str) -> None:
    from tunesmith.run import Run

    run_ = Run.from_file(config, overrides)
    run_.open()
    for stage in stages:
        if run_.dir.is_done(stage):
            err.print(f"[dim]{stage}: already done, skipping[/]")
        else:
            getattr(run_, stage)()


def print_metrics(metrics: dict[str, dict[str, Any]]) -> None:
    """A table of each metric for the base and the tuned model, with the difference."""
    table = Table(title="Evaluation on the test split")
    columns = [name for name in ("base", "tuned") if name in metrics]
    table.add_column("metric")
    for name in columns:
        table.add_column(name, justify="right")
    if len(columns) == 2:
        table.add_column("delta", justify="right")
    for metric in metrics["tuned"]:
        values = [metrics[name].get(metric) for name in columns]
        cells = [f"{v:.4f}" if isinstance(v, float) else str(v) for v in values]
        if len(columns) == 2:
            cells.append(f"{values[1] - values[0]:+.4f}")
        table.add_row(metric, *cells)
    out.print(table)


def main() -> None:
    """Console entry point: user errors become a short message and exit code 2."""
    debug = "--debug" in sys.argv
    if debug:
        sys.argv.remove("--debug")
    try:
        app()
    except TunesmithError as exc:
        if debug:
            raise
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]; completed stages are kept, rerun the same command to continue")
        sys.exit(130)


if __name__ == "__main__":
    main()
