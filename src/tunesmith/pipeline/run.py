"""One Run = one config + one run directory. Stages (prepare -> train -> evaluate -> report) are resumable.

A stage is recorded in ``state.json`` only after all its outputs are in place, so a run killed mid-stage
redoes that stage and never looks complete.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any

import yaml

from tunesmith.core.config import RunConfig, load_config, validate_config
from tunesmith.core.console import console
from tunesmith.core.errors import TunesmithError
from tunesmith.core.fs import atomic_dir, read_json, read_jsonl, write_json, write_jsonl, write_text
from tunesmith.core.logs import attach as attach_logs
from tunesmith.data.prepare import load_eval_chats, prepare_data, write_prepared
from tunesmith.data.records import record_from_dict
from tunesmith.data.render import ensure_chat_template
from tunesmith.data.tokens import TokenCounter
from tunesmith.engine.precision import choose_precision
from tunesmith.models.adapt import (
    apply_method,
    check_method,
    count_parameters,
    quantization_config,
    save_model,
    supports_packing,
)
from tunesmith.models.load import load_tokenizer
from tunesmith.models.resolve import resolve_model
from tunesmith.pipeline.encoding import encode_split
from tunesmith.pipeline.evaluators import evaluator
from tunesmith.pipeline.mixing import mix_tasks, replay_rows
from tunesmith.pipeline.trained import TrainedRun
from tunesmith.recipes.contract import OwnLoop

STAGES = ("prepare", "train", "evaluate", "report")


class Run(TrainedRun):
    """A fine-tuning run: the stages that write its directory, on top of the read side (``TrainedRun``); also the
    Python API: ``Run.from_file("quickstart.yaml").run()``."""

    def __init__(
        self, config: RunConfig, root: Path | None = None, replay: tuple[float, list[Path]] = (0.0, [])
    ) -> None:
        """``replay``: the fraction of training rows to draw from earlier runs' prepared training splits (the
        stages of a sequential run), and those split files."""
        super().__init__(config, root)
        self.replay_fraction, self.replay_sources = replay

    @classmethod
    def from_file(cls, path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Run:
        return cls(load_config(path, overrides))

    # ------------------------------------------------------------ orchestration

    def run(self, force: bool = False, resume: bool = False) -> dict[str, Any] | None:
        """Run every stage not yet done; return the evaluation metrics (None when evaluation is off).

        ``resume`` continues an interrupted training stage from its newest checkpoint.
        """
        self.open(force)
        if all(self.dir.is_done(s) for s in self.active_stages()):
            console.print(
                f"[green]Run '{self.dir.root}' is already complete[/]; nothing to do (use --force to redo it)."
            )
            return self.results()
        if not self.dir.is_done("train"):
            self.check_model()
        for stage in self.active_stages():
            if self.dir.is_done(stage):
                console.print(f"[dim]{stage}: already done, skipping[/]")
                continue
            self.train(resume=resume) if stage == "train" else getattr(self, stage)()
        return self.results()

    def active_stages(self) -> list[str]:
        return [s for s in STAGES if s != "evaluate" or self.config.eval.enabled]

    def open(self, force: bool = False) -> None:
        """Create the run directory, or check an existing one was made by the same config."""
        resolved = self.config.to_yaml()
        if self.dir.config.is_file() and not force:
            previous = yaml.safe_load(self.dir.config.read_text(encoding="utf-8"))
            # Compare settings, not text: a section added by a newer tunesmith holds defaults, not changes.
            with contextlib.suppress(TunesmithError):
                previous = validate_config(previous).model_dump(mode="json")
            changed = _changed_keys(previous, self.config.model_dump(mode="json"))
            if changed:
                raise TunesmithError(
                    f"{self.dir.root} was made by a different config (changed: {', '.join(changed[:5])}).\n"
                    "  fix: add --force to start this run over, or pick another name with --set output.name=NEW"
                )
        elif force and self.dir.root.exists():
            shutil.rmtree(self.dir.root)
        self.dir.root.mkdir(parents=True, exist_ok=True)
        write_text(self.dir.config, resolved)
        attach_logs(self.dir.root / "logs")

    def record_environment(self) -> None:
        """Write ``environment.json``: the versions, machine and seeds of this process (prepare and train call it,
        so a finished run records where it was trained)."""
        from tunesmith.core.environment import collect, config_seeds

        precision = choose_precision(self.config.training.precision).to_dict()
        write_json(self.dir.environment, collect(config_seeds(self.config.model_dump(mode="json")), precision))

    def check_model(self) -> None:
        """Fail before any work if the method cannot run here or the model cannot be found (resolving converts a
        GGUF once)."""
        check_method(self.config.method)
        load_tokenizer(self.config.model, resolve_model(self.config.model.name))
        if self.config.model.from_run:
            from tunesmith.pipeline.continual import earlier_run

            earlier_run(self.config)  # a run this config can continue (same base model, task and method)

    def results(self) -> dict[str, Any] | None:
        """``{"base": {...}, "tuned": {...}}`` of a finished evaluation, else None."""
        path = self.dir.eval / "metrics.json"
        return read_json(path) if path.is_file() else None

    # ------------------------------------------------------------ stages

    def prepare(self) -> None:
        self.record_environment()
        cfg = self.config
        console.print("[bold]prepare[/]: loading and validating data")
        prepared = prepare_data(
            cfg.data,
            cfg.task,
            cfg.training.seed,
            convert=self.convert,
            accepts=self.recipe.accepts,
            tokens=self._token_counter(),
        )
        if cfg.data.mix:
            prepared = mix_tasks(self, prepared, self._token_counter())
        if cfg.model.from_run and cfg.data.replay:  # continual learning: replay the earlier run's training rows
            from tunesmith.pipeline.continual import replay_sources

            self.replay_fraction, self.replay_sources = cfg.data.replay, replay_sources(cfg)
        if self.replay_fraction and self.replay_sources:
            replayed = replay_rows(self, self.replay_sources, self.replay_fraction, len(prepared.splits["train"]))
            prepared.splits["train"] += replayed
            prepared.summary["replay"] = {"fraction": self.replay_fraction, "rows": len(replayed)}
            prepared.summary["rows"]["train"] = len(prepared.splits["train"])
            console.print(f"  replay: {len(replayed)} training rows from earlier stages")
        with atomic_dir(self.dir.data) as tmp:
            write_prepared(prepared, tmp)
        report = prepared.report()
        console.print(f"  rows {report['rows']}, rejected {report['rejected']} (see {self.dir.data / 'rejects.jsonl'})")
        if report.get("dropped"):
            console.print(f"  dropped by reason {report['dropped']}; report: {self.dir.data / 'report.json'}")
        for note in report.get("notes", []):
            console.print(f"  [yellow]note:[/] {note}")
        unused = list(dict.fromkeys(c for cols in report.get("unused_columns", {}).values() for c in cols))
        if unused:  # said once for all splits: a column the user may have meant to train on
            console.print(
                f"  [yellow]note:[/] columns not used: {', '.join(unused)} (data.text_template or data.columns "
                "would use them; listed in data/report.json)"
            )
        if cfg.data.audit:
            self._audit_data()
        self.dir.mark_done("prepare", report)

    def _audit_data(self) -> None:
        """``data/audit.json``: the audit of the training file as the user wrote it (lines match their file)."""
        from tunesmith.curate.audit import audit_file

        source = self.config.data.train
        try:
            if not isinstance(source, str) or source.startswith("hf:"):
                raise TunesmithError(f"data.audit reads a local file with a text column, not {source}")
            data = self.config.data
            audit = audit_file(
                source, label_column=data.label_column, seed=self.config.training.seed, scorer=data.audit_scorer
            )
        except TunesmithError as exc:  # an audit that cannot be made must not stop the run
            console.print(f"  [yellow]audit skipped:[/] {exc}")
            audit = {"file": str(source), "error": str(exc)}
        else:
            issues, dup = audit["label_issues"]["count"], audit["duplicates"]["groups"]
            where = self.dir.data / "audit.json"
            console.print(f"  audit: {issues} likely label errors, {dup} duplicate groups ({where})")
        write_json(self.dir.data / "audit.json", audit)

    def train(self, resume: bool = False, on_eval: Any = None) -> Any:
        """Train and save the model; return the trained (unwrapped) model.

        ``resume`` continues from the newest checkpoint in ``checkpoints/``; without it, existing checkpoints
        are an error rather than silently overwritten or ignored. ``on_eval(step, val_loss)`` is called after
        each validation (a sweep's pruner; it may raise to stop the run).
        """
        self.record_environment()
        if isinstance(self.recipe.training, OwnLoop):  # recipes with their own loop (RL rollouts)
            self._check_checkpoints(resume)
            return self.recipe.training.train(self, resume)
        training = self.recipe.training
        from tunesmith.engine import (
            checkpoints,
            distributed_kind,
            make_accelerator,
            shards_weights,
            train,
            whole_state_dict,
        )

        cfg = self.config
        check_method(cfg.method)
        resolved = resolve_model(cfg.model.name)
        tokenizer = load_tokenizer(cfg.model, resolved)
        if self.recipe.uses_chat_template and ensure_chat_template(tokenizer):
            console.print("[yellow]the tokenizer has no chat template; using a ChatML fallback[/]")
        train_examples = encode_split(self, "train", tokenizer)
        val_examples = encode_split(self, "validation", tokenizer) if self.dir.split("validation").is_file() else None

        import torch

        model = self.recipe.load_model(cfg, resolved, quantization_config(cfg.method), self.labels())
        pruned = self._prune(model, train_examples) if cfg.method.name == "prune" else None
        torch.manual_seed(cfg.training.seed)  # adapter initialisation is part of the seeded run
        if cfg.model.from_run:  # continual learning: the earlier run's tuned weights, trainable
            from tunesmith.pipeline.continual import continue_from

            model = continue_from(self, model)
        else:
            model = apply_method(
                model, cfg.method, tokenizer_path=resolved.location, task_type=self.recipe.peft_task_type
            )
        trainable, total = count_parameters(model)
        console.print(
            f"[bold]train[/]: {cfg.model.name} ({resolved.kind}), method {cfg.method.name}, "
            f"{trainable:,} of {total:,} parameters trainable ({100 * trainable / total:.2f}%)"
        )
        precision = choose_precision(cfg.training.precision)
        console.print(f"  precision {precision.name}: {precision.reason}")
        packs = cfg.training.packing and self.recipe.packs and supports_packing(cfg.method)
        if cfg.training.packing and self.recipe.packs and not supports_packing(cfg.method):
            console.print(f"  {cfg.method.name} tuning trains on padded batches: packing cannot mask virtual tokens")
        self._check_checkpoints(resume)
        if not (resume and checkpoints(self.dir.checkpoints)):  # from the start: earlier rows would be duplicated
            self.dir.metrics.unlink(missing_ok=True)
        accelerator = make_accelerator(cfg.training.precision)
        if shards_weights(accelerator) and cfg.method.name == "prune" and cfg.method.prune.then == "lora":
            raise TunesmithError(
                "method prune with then: lora merges the adapter before saving, which sharded weights (FSDP, "
                "DeepSpeed ZeRO-3) cannot be; launch it with DDP or DeepSpeed ZeRO-2 instead"
            )
        summary = train(
            model,
            train_examples,
            training.train_fns(tokenizer, cfg, cfg.training.max_seq_len if packs else None),
            cfg.training,
            accelerator=accelerator,
            metrics_path=self.dir.metrics,
            val_examples=val_examples,
            checkpoint_dir=self.dir.checkpoints,
            resume=resume,
            on_eval=on_eval,
        )
        tuned = accelerator.unwrap_model(model)
        whole = whole_state_dict(model, accelerator)  # sharded: every process takes part, the main one gets them
        if accelerator.is_main_process:
            with atomic_dir(self.dir.model) as tmp:
                tuned = save_model(tuned, cfg.method, tmp, whole)
                tokenizer.save_pretrained(tmp)
                if pruned is not None:
                    write_json(tmp / "prune.json", pruned.to_dict())
            console.print(
                f"  {summary.steps} steps, final loss {summary.train_loss:.4f}, "
                f"{summary.tokens_per_second:,.0f} tokens/s; saved {self.dir.model}"
            )
            self.dir.mark_done(
                "train",
                {
                    "steps": summary.steps,
                    "train_loss": summary.train_loss,
                    "val_loss": summary.val_loss,
                    "tokens": summary.tokens,
                    "seconds": round(summary.seconds, 1),
                    "trainable_parameters": trainable,
                    "processes": accelerator.num_processes,
                    "distributed": distributed_kind(accelerator),
                    "peak_memory_mb": round(_peak_memory_mb(), 1),
                    "peak_memory_of": "gpu" if torch.cuda.is_available() else "process",
                    **({"prune": pruned.to_dict()} if pruned is not None else {}),
                },
            )
        accelerator.wait_for_everyone()  # no process leaves (and tears its group down) while the main one saves
        return tuned

    def evaluate(self) -> dict[str, Any]:
        """Evaluate base and tuned model on the test split (see ``tunesmith.evaluation``); with a data mix, also
        every other task on its own test split (``eval-<task>/``, summed up in ``eval/tasks.json``)."""
        per_task = {}
        for name in list(self.task_configs())[1:]:
            path = self.dir.split(f"test-{name}")
            if path.is_file():
                console.print(f"[bold]task {name}[/]")
                records = [record_from_dict(row) for row in read_jsonl(path)]
                task_run = self.task_run(name)
                per_task[name] = evaluator(task_run)(task_run, chats=records, out_dir=self.dir.root / f"eval-{name}")
        main = self.task_run(self.config.data.name) if self.config.multihead else self
        metrics = evaluator(main)(main)
        if per_task:
            write_json(self.dir.eval / "tasks.json", {self.config.data.name: metrics, **per_task})
        if self.config.model.from_run:  # continual learning: how the new model does on the earlier test split
            from tunesmith.pipeline.continual import measure_forgetting

            measure_forgetting(self)
        return metrics

    def evaluate_split(self, split: str) -> dict[str, Any]:
        """Evaluate on another prepared split (e.g. validation), written to ``eval-<split>/``."""
        return evaluator(self)(self, split=split)

    def evaluate_file(self, path: Path) -> Path:
        """Evaluate on the rows of another file; results (and its rejects) go to ``eval-<file stem>/``."""
        records, rejects = load_eval_chats(path, self.config.data, self.config.task, convert=self.convert)
        out_dir = self.dir.root / f"eval-{Path(path).stem}"
        evaluator(self)(self, chats=records, out_dir=out_dir)
        write_jsonl(out_dir / "rejects.jsonl", (r.to_dict() for r in rejects))
        return out_dir

    def report(self) -> Path:
        """Write ``report.html`` from what the run directory holds."""
        from tunesmith.pipeline.report import write_report

        path = write_report(self.dir)
        console.print(f"[bold]report[/]: {path}")
        self.dir.mark_done("report", {})
        return path

    # ------------------------------------------------------------ helpers

    def _token_counter(self) -> TokenCounter:
        """Token lengths for the data report and data.clean.min_tokens / max_tokens (the tokenizer only)."""
        cfg = self.config
        tokenizer = load_tokenizer(cfg.model, resolve_model(cfg.model.name))
        if self.recipe.uses_chat_template:
            ensure_chat_template(tokenizer)
        return TokenCounter(tokenizer, cfg.training.max_seq_len, dict(cfg.data.label_names))

    def _check_checkpoints(self, resume: bool) -> None:
        from tunesmith.engine import checkpoints

        found = checkpoints(self.dir.checkpoints)
        if resume:
            where = f"step {found[-1][0]} ({found[-1][1]})" if found else "the start (no checkpoint was saved yet)"
            console.print(f"[bold]resume[/]: continuing from {where}")
        elif found:
            raise TunesmithError(
                f"{self.dir.checkpoints} holds checkpoints of an unfinished training run "
                f"(newest: step {found[-1][0]}).\n"
                "  fix: add --resume to continue it, or start over with `tunesmith run --force` (or delete that folder)"
            )

    def _prune(self, model: Any, train_examples: list[Any]) -> Any:
        """Drop the least influential layers (measured on the first training rows); print and return the report."""
        from tunesmith.models.prune import prune_model

        report = prune_model(model, self.config.method.prune, [e.input_ids for e in train_examples])
        console.print(
            f"[bold]prune[/]: dropped layers {report.dropped} of {report.layers_before}; parameters "
            f"{report.parameters_before:,} -> {report.parameters_after:,}, forward "
            f"{report.tokens_per_second_before:,.0f} -> {report.tokens_per_second_after:,.0f} tokens/s"
        )
        return report


def _peak_memory_mb() -> float:
    """Peak GPU memory allocated when training on CUDA, else the process's peak resident memory."""
    import resource

    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = dict.fromkeys([*old, *new])
        return [k for key in keys for k in _changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [prefix.rstrip(".")]
