"""Hyperparameter search over any config key with Optuna (``tunesmith sweep CONFIG --trials N``).

The space is written in YAML (``training.learning_rate: loguniform(1e-5, 1e-3)``) and checked against the config
schema before any trial runs. Each trial is an ordinary run in ``<sweep dir>/trials/trial-NNN``; the engine reports
its validation loss every ``training.eval_every`` steps to Optuna's pruner, which stops bad trials early. The study
lives in SQLite in the sweep directory by default, so a killed sweep continues where it stopped; a PostgreSQL URL
(``--storage``) lets several machines work on one study.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import csv
import difflib
import fcntl
import gc
import io
import math
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.table import Table

from tunesmith.config import (
    RunConfig,
    SweepConfig,
    _BlockDumper,
    _section_type,
    load_raw_config,
    validate_config,
)
from tunesmith.errors import ConfigError, TunesmithError
from tunesmith.io import write_json, write_text

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)
KINDS = ("loguniform", "uniform", "int", "logint", "choice")
FINISHED = ("COMPLETE", "PRUNED")


# ---------------------------------------------------------------- the search space


@dataclass
class Param:
    """One searched config key and its distribution."""

    key: str
    kind: str  # one of KINDS
    args: tuple[Any, ...]

    def suggest(self, trial: Any) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.args))
        if self.kind in ("int", "logint"):
            step = self.args[2] if len(self.args) > 2 else 1
            return trial.suggest_int(self.key, self.args[0], self.args[1], step=step, log=self.kind == "logint")
        return trial.suggest_float(self.key, self.args[0], self.args[1], log=self.kind == "loguniform")

    def extremes(self) -> list[Any]:
        """Values that together exercise the whole range (checked against the schema before the sweep)."""
        return list(self.args) if self.kind == "choice" else [self.args[0], self.args[1]]


def parse_space(space: dict[str, Any]) -> list[Param]:
    """``{key: "loguniform(1e-5, 1e-3)" | [choices]}`` -> params; ConfigError naming the key on any problem."""
    params = []
    for key, spec in space.items():
        where = f"sweep.space.{key}"
        if isinstance(spec, list):
            kind, args = "choice", tuple(spec)
        else:
            text = str(spec).strip()
            name, sep, rest = text.partition("(")
            name = name.strip()
            if not sep or not rest.endswith(")") or name not in KINDS:
                raise ConfigError(
                    f"{where}: {spec!r} is not a distribution; expected one of loguniform(a, b), uniform(a, b), "
                    "int(a, b[, step]), logint(a, b), choice(x, y, ...) or a YAML list"
                )
            kind, args = name, _parse_args(rest[:-1], where)
        params.append(_check_param(Param(key, kind, args), where))
    return params


def _parse_args(text: str, where: str) -> tuple[Any, ...]:
    """Python literals (1e-5, 16, 'cosine'); a bare word is taken as a string (choice(cosine, linear))."""
    values = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            raise ConfigError(f"{where}: empty argument in {text!r}")
        try:
            values.append(ast.literal_eval(part))
        except (ValueError, SyntaxError):
            values.append({"true": True, "false": False, "null": None}.get(part.lower(), part))
    return tuple(values)


def _check_param(param: Param, where: str) -> Param:
    args = param.args
    if param.kind == "choice":
        if not args:
            raise ConfigError(f"{where}: choice() needs at least one value")
        if not all(a is None or isinstance(a, bool | int | float | str) for a in args):
            raise ConfigError(f"{where}: choices must be numbers, strings, booleans or null, got {list(args)}")
        return param
    numbers = param.kind in ("int", "logint") and all(isinstance(a, int) and not isinstance(a, bool) for a in args)
    numbers |= param.kind in ("uniform", "loguniform") and all(isinstance(a, int | float) for a in args)
    want = 3 if param.kind == "int" else 2
    if not numbers or not 2 <= len(args) <= want:
        kind = "integers" if param.kind in ("int", "logint") else "numbers"
        raise ConfigError(
            f"{where}: {param.kind}() takes {kind} (low, high{', step' if want == 3 else ''}), got {args}"
        )
    if args[0] >= args[1]:
        raise ConfigError(f"{where}: low ({args[0]}) must be below high ({args[1]})")
    if param.kind.startswith("log") and args[0] <= 0:
        raise ConfigError(f"{where}: {param.kind}() needs a positive low value, got {args[0]}")
    if param.kind in ("uniform", "loguniform"):
        return Param(param.key, param.kind, (float(args[0]), float(args[1])))
    return param


def check_space(base: dict[str, Any], params: list[Param]) -> None:
    """Every key must be a setting of the schema, and every range end / choice a valid value for it."""
    for param in params:
        _check_key(param.key)
        for value in param.extremes():
            raw = copy.deepcopy(base)
            set_key(raw, param.key, value)
            try:
                validate_config(raw, source=f"sweep.space.{param.key} = {value!r}")
            except ConfigError as exc:
                raise ConfigError(
                    f"{exc}\n  (the sweep tries this value; narrow the range or fix the config)"
                ) from None


def _check_key(key: str) -> None:
    model: type[BaseModel] | None = RunConfig
    parts = key.split(".")
    for depth, part in enumerate(parts):
        fields = model.model_fields if model is not None else {}
        if part not in fields:
            prefix = ".".join(parts[:depth])
            known = [f"{prefix}.{f}".lstrip(".") for f in fields]
            hint = difflib.get_close_matches(".".join(parts[: depth + 1]), known, n=1)
            did = f"; did you mean '{hint[0]}'?" if hint else (f" (allowed: {', '.join(known)})" if known else "")
            raise ConfigError(f"sweep.space: '{key}' is not a config setting{did}")
        model = _section_type(fields[part].annotation)
    if model is not None:
        raise ConfigError(f"sweep.space: '{key}' is a section, not a setting; name one of its keys")


def set_key(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    for part in key.split(".")[:-1]:
        node = node.setdefault(part, {})
    node[key.split(".")[-1]] = value


# ---------------------------------------------------------------- loading a sweep


@dataclass
class Sweep:
    name: str
    dir: Path
    base: dict[str, Any]  # the run config (validated, without its sweep section)
    settings: SweepConfig
    params: list[Param]

    @property
    def direction(self) -> str:
        if self.settings.direction:
            return self.settings.direction
        lower = self.settings.metric.lower()
        return "minimize" if "loss" in lower or "perplexity" in lower else "maximize"


def load_sweep(config: str | Path, space_file: str | Path | None = None, overrides: tuple[str, ...] = ()) -> Sweep:
    """The run config and its search space, all checked before any trial runs."""
    raw = load_raw_config(config, overrides)
    section = raw.pop("sweep", None)
    if space_file is not None:
        path = Path(space_file)
        if not path.is_file():
            raise ConfigError(f"sweep file not found: {path}")
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        section = loaded.get("sweep", loaded) if isinstance(loaded, dict) else loaded
        source = str(path)
    else:
        source = f"{config} (sweep section)"
    if section is None:
        raise ConfigError(
            f"{config}: no search space; add a `sweep:` section with `space:` (docs/iterate.md) or pass --space FILE"
        )
    try:
        settings = SweepConfig.model_validate(section)
    except ValidationError as exc:
        problems = "\n".join(f"  - sweep.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{source}: invalid sweep settings\n{problems}") from None
    run_config = validate_config(raw, source=str(config))
    params = parse_space(settings.space)
    check_space(raw, params)
    for i, fixed in enumerate(settings.enqueue):
        unknown = sorted(set(fixed) - {p.key for p in params})
        if unknown:
            raise ConfigError(f"sweep.enqueue[{i}]: {', '.join(unknown)} not in sweep.space")
    training = run_config.training
    has_validation = bool(run_config.data.validation) or run_config.data.validation_fraction > 0
    if not has_validation:
        raise ConfigError(
            f"{config}: a sweep is judged on validation data, and there is none.\n"
            "  fix: set data.validation (a file) or data.validation_fraction (e.g. 0.1)"
        )
    if settings.metric == "val_loss" and not training.eval_every:
        raise ConfigError(
            f"{config}: sweep.metric is val_loss, measured every training.eval_every steps, which is not set.\n"
            "  fix: set training.eval_every (e.g. a quarter of the steps); it also lets the pruner stop bad trials"
        )
    name = run_config.output.name or Path(config).stem
    return Sweep(name, Path(run_config.output.dir) / f"{name}-sweep", raw, settings, params)


# ---------------------------------------------------------------- running


def run_sweep(sweep: Sweep, trials: int, storage: str | None = None) -> dict[str, Any]:
    """Run trials until the study has ``trials`` finished (complete or pruned) ones; write the results.

    With the default SQLite storage a lock file keeps one process per sweep directory, so trials left RUNNING
    in the study belong to a killed process: they are marked failed and their values are tried again first.
    With ``storage`` (e.g. PostgreSQL, shared by machines) Optuna's heartbeat does that for trials whose
    worker stopped beating.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sweep.dir.mkdir(parents=True, exist_ok=True)
    write_text(
        sweep.dir / "sweep.yaml", yaml.dump({**sweep.base, "sweep": sweep.settings.model_dump()}, sort_keys=False)
    )
    with _lock(sweep.dir, shared=storage is not None):
        study = _open_study(sweep, storage)
        if storage is None:
            _fail_interrupted(study)
        done = sum(t.state.name in FINISHED for t in study.trials)
        if done:
            console.print(f"[bold]sweep[/]: {done} of {trials} trials already finished in {sweep.dir}; continuing")
        remaining = trials - done
        if remaining > 0:
            study.optimize(
                _Objective(sweep),
                n_trials=remaining,
                catch=(_TrialFailed,),
                callbacks=[
                    optuna.study.MaxTrialsCallback(
                        trials, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
                    ),
                    lambda s, _t: write_results(sweep, s),
                ],
                gc_after_trial=True,
            )
        return finish(sweep, study)


def _open_study(sweep: Sweep, storage: str | None) -> Any:
    import optuna

    if storage is None:
        url = f"sqlite:///{(sweep.dir / 'study.db').resolve()}"
        rdb = optuna.storages.RDBStorage(url)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: stable since 2.8
            rdb = optuna.storages.RDBStorage(
                storage,
                heartbeat_interval=30,
                grace_period=120,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
            )
    sampler = (
        optuna.samplers.RandomSampler(seed=sweep.settings.seed)
        if sweep.settings.sampler == "random"
        else optuna.samplers.TPESampler(
            seed=sweep.settings.seed, n_startup_trials=min(10, max(2, len(sweep.params) + 1))
        )
    )
    study = optuna.create_study(
        storage=rdb,
        study_name=sweep.name,
        direction=sweep.direction,
        sampler=sampler,
        pruner=_pruner(sweep.settings),
        load_if_exists=True,
    )
    if not study.trials and sweep.settings.enqueue:
        for fixed in sweep.settings.enqueue:
            study.enqueue_trial(fixed)
    return study


def _pruner(settings: SweepConfig) -> Any:
    import optuna

    if settings.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=settings.startup_trials, n_warmup_steps=settings.warmup_steps
        )
    if settings.pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def _fail_interrupted(study: Any) -> None:
    """Trials a killed sweep left RUNNING: mark them failed and queue their values to be tried again."""
    import optuna

    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        # Optuna has no public call to fail another process's trial; its storage API is the documented way.
        study._storage.set_trial_user_attr(trial._trial_id, "failure", "interrupted (the sweep was stopped)")
        study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        folder = trial.user_attrs.get("run_dir")
        if folder:
            shutil.rmtree(folder, ignore_errors=True)
        console.print(f"  trial {trial.number} was interrupted; its values are tried again")


class _TrialFailed(Exception):
    """A trial that cannot finish (diverged training, no target tokens): recorded as failed, the sweep goes on."""


class _Objective:
    """One trial: a run with the trial's values, judged on validation data, pruned from its validation loss."""

    def __init__(self, sweep: Sweep) -> None:
        self.sweep = sweep

    def __call__(self, trial: Any) -> float:
        import optuna

        from tunesmith.run import Run

        sweep = self.sweep
        values = {p.key: p.suggest(trial) for p in sweep.params}
        raw = copy.deepcopy(sweep.base)
        for key, value in values.items():
            set_key(raw, key, value)
        name = f"trial-{trial.number:03d}"
        raw["output"] = {"dir": str(sweep.dir / "trials"), "name": name}
        raw.setdefault("eval", {})["enabled"] = False  # the test split is for the final run, never for choosing
        run = Run(validate_config(raw, source=f"trial {trial.number}"))
        trial.set_user_attr("run_dir", str(run.dir.root))
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in values.items())
        console.print(f"[bold]trial {trial.number}[/]: {shown}")
        sign = -1.0 if sweep.direction == "maximize" else 1.0

        def report(step: int, val_loss: float) -> None:
            # The pruner compares intermediate values only with each other, so a validation loss (negated when the
            # objective is maximised) is a fair early signal even for an accuracy objective.
            trial.report(sign * val_loss, step)
            trial.set_user_attr("last_step", step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation loss {val_loss:.4f} at step {step} is worse than the median")

        run.open(force=True)
        try:
            run.prepare()
            run.train(on_eval=report)
        except optuna.TrialPruned as exc:
            console.print(f"  [yellow]pruned[/]: {exc}")
            raise
        except TunesmithError as exc:
            trial.set_user_attr("failure", str(exc).splitlines()[0])
            console.print(f"  [red]failed[/]: {exc}")
            raise _TrialFailed(str(exc)) from exc
        finally:
            gc.collect()
        value = self._value(run)
        if not math.isfinite(value):
            trial.set_user_attr("failure", f"{sweep.settings.metric} is {value}")
            raise _TrialFailed(f"{sweep.settings.metric} is {value}")
        console.print(f"  {sweep.settings.metric} = {value:.4f}")
        return value

    def _value(self, run: Any) -> float:
        metric = self.sweep.settings.metric
        if metric == "val_loss":
            val = run.dir.read_state()["stages"]["train"].get("val_loss")
            return float("nan") if val is None else float(val)
        tuned = run.evaluate_split("validation")["tuned"]
        if metric not in tuned:
            raise ConfigError(
                f"sweep.metric '{metric}' is not a metric of this task; the validation evaluation gives: "
                f"val_loss, {', '.join(tuned)}"
            )
        return float(tuned[metric])


@contextlib.contextmanager
def _lock(folder: Path, shared: bool) -> Iterator[None]:
    """One sweep process per directory with local SQLite (several are fine with a shared database)."""
    if shared:
        yield
        return
    with (folder / ".lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TunesmithError(
                f"{folder}: another `tunesmith sweep` is running on this directory.\n"
                "  fix: wait for it, or use --storage postgresql://... to let several processes share one study"
            ) from None
        yield


# ---------------------------------------------------------------- results


def trial_rows(study: Any) -> list[dict[str, Any]]:
    rows = []
    for t in study.trials:
        duration = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else None
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name,
                "value": t.value,
                **{f"params.{k}": v for k, v in t.params.items()},
                "last_step": t.user_attrs.get("last_step"),
                "seconds": round(duration, 1) if duration is not None else None,
                "note": t.user_attrs.get("failure", ""),
                "run_dir": t.user_attrs.get("run_dir", ""),
            }
        )
    return rows


def write_results(sweep: Sweep, study: Any) -> list[dict[str, Any]]:
    """results.json and results.csv: one row per trial (written after every trial, so a kill loses nothing)."""
    rows = trial_rows(study)
    write_json(sweep.dir / "results.json", rows)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    write_text(sweep.dir / "results.csv", buffer.getvalue())
    return rows


def finish(sweep: Sweep, study: Any) -> dict[str, Any]:
    """Results table, best config as a runnable YAML, the best model kept (others deleted), report.html."""
    import optuna

    rows = write_results(sweep, study)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    summary: dict[str, Any] = {
        "name": sweep.name,
        "metric": sweep.settings.metric,
        "direction": sweep.direction,
        "trials": {s: sum(r["state"] == s for r in rows) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")},
        "best": None,
    }
    if complete:
        best = study.best_trial
        best_raw = copy.deepcopy(sweep.base)
        for key, value in best.params.items():
            set_key(best_raw, key, value)
        best_raw["output"] = {**sweep.base.get("output", {}), "name": f"{sweep.name}-best"}
        header = f"# best of sweep '{sweep.name}': trial {best.number}, {sweep.settings.metric} = {best.value:.6g}\n"
        write_text(sweep.dir / "best.yaml", header + yaml.dump(best_raw, Dumper=_BlockDumper, sort_keys=False))
        best_dir = Path(best.user_attrs["run_dir"])
        summary["best"] = {
            "trial": best.number,
            "value": best.value,
            "params": best.params,
            "config": str(sweep.dir / "best.yaml"),
            "model": str(best_dir / "model"),
        }
        if sweep.settings.keep_models == "best":
            for row in rows:
                folder = Path(row["run_dir"]) / "model" if row["run_dir"] else None
                if folder is not None and row["trial"] != best.number and folder.is_dir():
                    shutil.rmtree(folder)
    summary["report"] = str(write_sweep_report(sweep, study, rows, summary))
    write_json(sweep.dir / "summary.json", summary)
    print_results(sweep, rows, summary)
    return summary


def print_results(sweep: Sweep, rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    table = Table(title=f"Sweep '{sweep.name}': {sweep.settings.metric} ({sweep.direction})")
    params = [k for k in dict.fromkeys(k for r in rows for k in r) if k.startswith("params.")]
    for column in ("trial", "state", sweep.settings.metric, *(p.removeprefix("params.") for p in params), "step", "s"):
        table.add_column(column, justify="right" if column not in ("state",) else "left")
    best = (summary.get("best") or {}).get("trial")
    for r in rows:
        cells = [
            str(r["trial"]) + (" *" if r["trial"] == best else ""),
            r["state"].lower(),
            "-" if r["value"] is None else f"{r['value']:.4f}",
            *(_fmt(r.get(p)) for p in params),
            "-" if r["last_step"] is None else str(r["last_step"]),
            "-" if r["seconds"] is None else f"{r['seconds']:.0f}",
        ]
        table.add_row(*cells)
    out.print(table)
    if summary.get("best"):
        b = summary["best"]
        out.print(f"best: trial {b['trial']} ({sweep.settings.metric} {b['value']:.4f}); config {b['config']}")
        out.print(
            f"      model {b['model']}"
            + ("; other trials' model folders were deleted" if sweep.settings.keep_models == "best" else "")
        )
    out.print(f"report: {summary['report']}")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "-" if value is None else str(value)


# ---------------------------------------------------------------- report


def write_sweep_report(sweep: Sweep, study: Any, rows: list[dict[str, Any]], summary: dict[str, Any]) -> Path:
    """``report.html``: results table, optimisation history and parameter importance (inline SVG), best config."""
    from jinja2 import Environment, PackageLoader

    history, importance, note = _plots(study)
    env = Environment(loader=PackageLoader("tunesmith", "templates"), autoescape=True)
    best_yaml = sweep.dir / "best.yaml"
    html = env.get_template("sweep.html.j2").render(
        name=sweep.name,
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        summary=summary,
        rows=rows,
        params=[k for k in dict.fromkeys(k for r in rows for k in r) if k.startswith("params.")],
        space=sweep.settings.space,
        history=history,
        importance=importance,
        importance_note=note,
        best_yaml=best_yaml.read_text(encoding="utf-8") if best_yaml.is_file() else None,
    )
    path = sweep.dir / "report.html"
    write_text(path, html)
    return path


def _plots(study: Any) -> tuple[str | None, str | None, str | None]:
    """Optuna's own matplotlib plots as inline SVG; importance needs >= 2 finished trials that vary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return None, None, "no trial completed yet"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna marks its matplotlib plots experimental
        history = _svg(ovm.plot_optimization_history(study), plt)
        importance, note = None, None
        try:
            importance = _svg(ovm.plot_param_importances(study), plt)
        except (RuntimeError, ValueError) as exc:
            note = f"parameter importance not available: {exc}"
    return history, importance, note


def _svg(axes: Any, plt: Any) -> str:
    figure = axes.figure
    figure.set_size_inches(6.5, 3.2)
    figure.tight_layout()
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    plt.close(figure)
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :]
