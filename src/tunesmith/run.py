"""One Run = one config + one run directory. Stages (prepare -> train -> evaluate -> report) are resumable.

A stage is recorded in ``state.json`` only after all its outputs are in place, so a run killed mid-stage
redoes that stage and never looks complete.
"""

from __future__ import annotations

import contextlib
import shutil
import statistics
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from tunesmith.config import RunConfig, load_config, validate_config
from tunesmith.data.prepare import load_eval_chats, prepare_data, write_prepared
from tunesmith.data.records import Record, record_from_dict, stratum
from tunesmith.data.render import ensure_chat_template
from tunesmith.data.tokens import TokenCounter
from tunesmith.errors import ConfigError, TunesmithError
from tunesmith.io import RunDir, atomic_dir, read_json, read_jsonl, write_json, write_jsonl, write_text
from tunesmith.models.adapt import (
    apply_method,
    check_method,
    count_parameters,
    load_trained,
    needs_base,
    quantization_config,
    save_model,
    supports_packing,
)
from tunesmith.models.load import load_tokenizer
from tunesmith.models.resolve import ResolvedModel, resolve_model
from tunesmith.recipes import get_recipe

STAGES = ("prepare", "train", "evaluate", "report")
console = Console(stderr=True, soft_wrap=True)


class Run:
    """A fine-tuning run; also the Python API: ``Run.from_file("quickstart.yaml").run()``."""

    def __init__(
        self, config: RunConfig, root: Path | None = None, replay: tuple[float, list[Path]] = (0.0, [])
    ) -> None:
        """``replay``: the fraction of training rows to draw from earlier runs' prepared training splits (the
        stages of a sequential run), and those split files."""
        if config.stages:
            raise TunesmithError(
                f"{config.output.name}: this config has stages; run it with `tunesmith run CONFIG` "
                f"(each stage becomes a run in {config.run_dir / 'stages'})"
            )
        self.config = config
        self.dir = RunDir(root if root is not None else config.run_dir)
        self.recipe = get_recipe(config.task.name, config)
        self.replay_fraction, self.replay_sources = replay
        self.model_subdir: str | None = None  # a task's folder in a multi-head model (model/<task>/)
        if config.multihead:
            from tunesmith.recipes.multihead import MultiHead

            tasks = {name: (self.task_recipe(name), c) for name, c in self.task_configs().items()}
            self.recipe = MultiHead(tasks, labels=lambda name: self.task_run(name).labels())
        check_recipe_method(self.recipe, config)

    @classmethod
    def from_file(cls, path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Run:
        return cls(load_config(path, overrides))

    @classmethod
    def from_dir(cls, path: str | Path) -> Run:
        """Open a trained run from its directory (``runs/<name>``), wherever it now lives.

        The resolved ``config.yaml`` is validated as a schema only: data files it names need not exist any more.
        """
        root = Path(path)
        config_path = root / "config.yaml"
        if not config_path.is_file():
            raise TunesmithError(
                f"{root}: not a run directory (no config.yaml).\n"
                "  fix: pass a run directory such as runs/<name>, made by `tunesmith run` or `tunesmith train`"
            )
        try:
            raw = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise TunesmithError(f"{config_path}: not valid YAML: {exc}") from None
        run = cls(validate_config(raw if isinstance(raw, dict) else {}, source=str(config_path)), root=root)
        if not run.dir.is_done("train") or not run.dir.model.is_dir():
            raise TunesmithError(
                f"{root}: this run has no trained model yet (state.json does not list 'train').\n"
                "  fix: finish it first with `tunesmith train CONFIG` or `tunesmith run CONFIG`"
            )
        return run

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

    def record_environment(self) -> None:
        """Write ``environment.json``: the versions, machine and seeds of this process (prepare and train call it,
        so a finished run records where it was trained)."""
        from tunesmith.environment import collect, config_seeds

        write_json(self.dir.environment, collect(config_seeds(self.config.model_dump(mode="json"))))

    def check_model(self) -> None:
        """Fail before any work if the method cannot run here or the model cannot be found (resolving converts a
        GGUF once)."""
        check_method(self.config.method)
        load_tokenizer(self.config.model, resolve_model(self.config.model.name))
        if self.config.model.from_run:
            from tunesmith.continual import earlier_run

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
            convert=self._convert,
            accepts=self.recipe.ACCEPTS,
            tokens=self._token_counter(),
        )
        if cfg.data.mix:
            prepared = self._mix_tasks(prepared)
        if cfg.model.from_run and cfg.data.replay:  # continual learning: replay the earlier run's training rows
            from tunesmith.continual import replay_sources

            self.replay_fraction, self.replay_sources = cfg.data.replay, replay_sources(cfg)
        if self.replay_fraction and self.replay_sources:
            replayed = self._replay_rows(len(prepared.splits["train"]))
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
        if cfg.data.audit:
            self._audit_data()
        self.dir.mark_done("prepare", report)

    def _audit_data(self) -> None:
        """``data/audit.json``: the audit of the training file as the user wrote it (lines match their file)."""
        from tunesmith.audit import audit_file

        source = self.config.data.train
        try:
            if not isinstance(source, str) or source.startswith("hf:"):
                raise TunesmithError(f"data.audit reads a local file with a text column, not {source}")
            audit = audit_file(source, label_column=self.config.data.label_column, seed=self.config.training.seed)
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
        if hasattr(self.recipe, "train"):  # recipes with their own loop (RL rollouts): see tunesmith.recipes
            self._check_checkpoints(resume)
            return self.recipe.train(self, resume=resume)
        from tunesmith.engine.checkpoint import checkpoints, distributed_kind, shards_weights, whole_state_dict
        from tunesmith.engine.loop import make_accelerator, train

        cfg = self.config
        check_method(cfg.method)
        resolved = resolve_model(cfg.model.name)
        tokenizer = load_tokenizer(cfg.model, resolved)
        if self.uses_chat_template() and ensure_chat_template(tokenizer):
            console.print("[yellow]the tokenizer has no chat template; using a ChatML fallback[/]")
        train_examples = self._encode_split("train", tokenizer)
        val_examples = self._encode_split("validation", tokenizer) if self.dir.split("validation").is_file() else None

        import torch

        model = self.recipe.load_model(cfg, resolved, quantization_config(cfg.method), self.labels())
        pruned = self._prune(model, train_examples) if cfg.method.name == "prune" else None
        torch.manual_seed(cfg.training.seed)  # adapter initialisation is part of the seeded run
        if cfg.model.from_run:  # continual learning: the earlier run's tuned weights, trainable
            from tunesmith.continual import continue_from

            model = continue_from(self, model)
        else:
            model = apply_method(
                model, cfg.method, tokenizer_path=resolved.location, task_type=self.recipe.PEFT_TASK_TYPE
            )
        trainable, total = count_parameters(model)
        console.print(
            f"[bold]train[/]: {cfg.model.name} ({resolved.kind}), method {cfg.method.name}, "
            f"{trainable:,} of {total:,} parameters trainable ({100 * trainable / total:.2f}%)"
        )
        packs = cfg.training.packing and self.recipe.PACKS and supports_packing(cfg.method)
        if cfg.training.packing and self.recipe.PACKS and not supports_packing(cfg.method):
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
            self.recipe.train_fns(tokenizer, cfg, cfg.training.max_seq_len if packs else None),
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
                per_task[name] = task_run._evaluator()(task_run, chats=records, out_dir=self.dir.root / f"eval-{name}")
        main = self.task_run(self.config.data.name) if self.config.multihead else self
        metrics = main._evaluator()(main)
        if per_task:
            write_json(self.dir.eval / "tasks.json", {self.config.data.name: metrics, **per_task})
        if self.config.model.from_run:  # continual learning: how the new model does on the earlier test split
            from tunesmith.continual import measure_forgetting

            measure_forgetting(self)
        return metrics

    def evaluate_split(self, split: str) -> dict[str, Any]:
        """Evaluate on another prepared split (e.g. validation), written to ``eval-<split>/``."""
        return self._evaluator()(self, split=split)

    def evaluate_file(self, path: Path) -> Path:
        """Evaluate on the rows of another file; results (and its rejects) go to ``eval-<file stem>/``."""
        records, rejects = load_eval_chats(path, self.config.data, self.config.task, convert=self._convert)
        out_dir = self.dir.root / f"eval-{Path(path).stem}"
        self._evaluator()(self, chats=records, out_dir=out_dir)
        write_jsonl(out_dir / "rejects.jsonl", (r.to_dict() for r in rejects))
        return out_dir

    def report(self) -> Path:
        """Write ``report.html`` from what the run directory holds."""
        from tunesmith.report import write_report

        path = write_report(self.dir)
        console.print(f"[bold]report[/]: {path}")
        self.dir.mark_done("report", {})
        return path

    # ------------------------------------------------------------ helpers

    def task_configs(self) -> dict[str, RunConfig]:
        """Each dataset of a multi-task mix as a config of its own, by task name (this config's data first)."""
        cfg = self.config
        configs = {cfg.data.name: cfg}
        for entry in cfg.data.mix:
            task = (entry.task or cfg.task).model_copy(
                update={"system_prompt": entry.system_prompt or cfg.task.system_prompt}
            )
            configs[entry.name] = cfg.model_copy(update={"data": entry, "task": task})
        return configs

    def task_recipe(self, name: str) -> Any:
        """The recipe of one task of a data mix (every task's own in a multi-head run)."""
        config = self.task_configs()[name]
        return get_recipe(config.task.name, config) if self.config.multihead else self.recipe

    def task_run(self, name: str) -> Run:
        """One task of a data mix as a run of its own in this run's directory (its model: model/<task>/ when
        the tasks have their own heads)."""
        config = self.task_configs()[name]
        run = Run(config.model_copy(update={"data": config.data.model_copy(update={"mix": []})}), root=self.dir.root)
        if self.config.multihead:
            run.model_subdir = name
        return run

    def _mix_tasks(self, main: Any) -> Any:
        """Prepare every other dataset of the mix like the first, then mix the training rows by weight.

        Validation rows of all tasks are pooled (one validation loss); each other task's test rows are kept as
        ``test-<task>.jsonl`` for its own evaluation. Every row carries its task in ``meta.task``.
        """
        from tunesmith.data.mix import mix_rows

        cfg = self.config
        per_task = {cfg.data.name: main}
        for name, task_config in list(self.task_configs().items())[1:]:
            per_task[name] = prepare_data(
                task_config.data,
                task_config.task,
                cfg.training.seed,
                convert=lambda record, c=task_config, r=self.task_recipe(name): r.convert(record, c),
                accepts=self.task_recipe(name).ACCEPTS,
                tokens=self._token_counter(),
            )
        for name, prepared in per_task.items():
            for records in prepared.splits.values():
                for record in records:
                    record.meta = {**record.meta, "task": name}
        weights = {name: c.data.weight for name, c in self.task_configs().items()}
        train = mix_rows({name: p.splits["train"] for name, p in per_task.items()}, weights, cfg.training.seed)
        splits = {"train": train}
        validation = [r for p in per_task.values() for r in p.splits.get("validation", [])]
        if validation:
            splits["validation"] = validation
        if "test" in main.splits:
            splits["test"] = main.splits["test"]
        for name, prepared in list(per_task.items())[1:]:
            if "test" in prepared.splits:
                splits[f"test-{name}"] = prepared.splits["test"]
        summary = {
            **main.report(),
            "rows": {name: len(rows) for name, rows in splits.items()},
            "mix": {name: sum(1 for r in train if r.meta["task"] == name) for name in per_task},
            "tasks": {name: p.report() for name, p in list(per_task.items())[1:]},
        }
        console.print(f"  multi-task mix of training rows: {summary['mix']}")
        return type(main)(splits, [r for p in per_task.values() for r in p.rejects], summary)

    def _replay_rows(self, n_train: int) -> list[Record]:
        """Earlier stages' training rows, converted for this task: ``replay`` of the mixed training split."""
        import random

        pool: list[Record] = []
        for path in self.replay_sources:
            for row in read_jsonl(path):
                record = record_from_dict(row)
                if not isinstance(record, self.recipe.ACCEPTS):
                    raise TunesmithError(
                        f"{path}: replay needs earlier training rows the '{self.config.task.name}' task can train on, "
                        f"but they are {type(record).__name__} records.\n  fix: set replay: 0 for this stage"
                    )
                record = self._convert(record)
                record.meta = {**record.meta, "replay": path.parent.parent.name}
                pool.append(record)
        wanted = round(self.replay_fraction * n_train / (1 - self.replay_fraction))
        return random.Random(self.config.training.seed).sample(pool, min(wanted, len(pool)))

    def _evaluator(self) -> Any:
        """Chat-reply evaluation for generative recipes (sft), the task's own predictions for the others."""
        if hasattr(self.recipe, "evaluate_run"):  # recipes with their own evaluation (preference, reward, RL)
            return self.recipe.evaluate_run
        if getattr(self.recipe, "GENERATIVE", False):
            from tunesmith.evaluation import evaluate_run

            return evaluate_run
        from tunesmith.task_evaluation import evaluate_task_run

        return evaluate_task_run

    def _token_counter(self) -> TokenCounter:
        """Token lengths for the data report and data.clean.min_tokens / max_tokens (the tokenizer only)."""
        cfg = self.config
        tokenizer = load_tokenizer(cfg.model, resolve_model(cfg.model.name))
        if self.uses_chat_template():
            ensure_chat_template(tokenizer)
        return TokenCounter(tokenizer, cfg.training.max_seq_len, dict(cfg.data.label_names))

    def _convert(self, record: Record) -> Record:
        return self.recipe.convert(record, self.config)

    def uses_chat_template(self) -> bool:
        """Causal-LM recipes render chats with the tokenizer's chat template (a fallback is added if missing)."""
        return self.recipe.PEFT_TASK_TYPE == "CAUSAL_LM"

    def labels(self) -> list[str] | None:
        """The task's label set: the configured label words, else the labels of the prepared training split
        (sorted), else None (tasks without labels)."""
        if self.config.data.labels:
            return self.config.data.labels
        path = self.dir.split("train")
        if not path.is_file():
            return None
        task = self.config.data.name
        rows = (record_from_dict(row) for row in read_jsonl(path))
        records = (r for r in rows if r.meta.get("task", task) == task)  # this task's rows of a multi-task mix
        if hasattr(self.recipe, "labels"):  # a recipe whose label set is not one label per row (tag: every tag)
            return self.recipe.labels(records)
        found = {label for record in records if (label := stratum(record)) is not None}
        return sorted(found) or None

    def load_base(self) -> Any:
        """The base model with the task's head (fp32), as training started from it."""
        return self.recipe.load_model(self.config, labels=self.labels())

    def _check_checkpoints(self, resume: bool) -> None:
        from tunesmith.engine.checkpoint import checkpoints

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

    def load_tuned(self) -> tuple[Any, Any]:
        """The tuned model (fp32, eval mode; a peft model for peft methods) and its tokenizer."""
        base = self.load_base() if needs_base(self.config.method) else None
        return self.tuned_from_base(base).eval(), self.tuned_tokenizer()

    def tuned_tokenizer(self) -> Any:
        """The tokenizer saved with the trained model, with the chat template it was trained with."""
        tokenizer = load_tokenizer(self.config.model, _saved_tokenizer(self.dir.model))
        if self.uses_chat_template():
            ensure_chat_template(tokenizer)
        return tokenizer

    def tuned_from_base(self, base_model: Any) -> Any:
        """The tuned model: the adapter attached to ``base_model`` (peft methods and bottleneck adapters, which
        change ``base_model`` in place), or the saved weights (full, freeze, prune), which ignore it."""
        folder = self.dir.model / self.model_subdir if self.model_subdir else self.dir.model
        return load_trained(self.config.method, folder, base_model, self.recipe.auto_class())

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

    def _encode_split(self, split: str, tokenizer: Any) -> list[Any]:
        """Tokenize a prepared split; rows left with no target tokens are dropped, counted and kept with a reason."""
        cfg = self.config
        examples, dropped, lengths, truncated = [], [], [], 0
        for row in read_jsonl(self.dir.split(split)):
            record = record_from_dict(row)
            encoded = self.recipe.encode_row(record, tokenizer, cfg)
            truncated += encoded.truncated
            lengths.append(len(encoded.input_ids))
            if encoded.n_targets == 0:
                dropped.append(
                    {
                        "source": record.source,
                        "reason": "no target tokens left after truncation to "
                        f"training.max_seq_len={cfg.training.max_seq_len}",
                    }
                )
                continue
            examples.append(encoded)
        write_json(
            self.dir.data / f"{split}_tokens.json",
            {
                "examples": len(examples),
                "dropped": len(dropped),
                "truncated": truncated,
                "tokens": {
                    "min": min(lengths),
                    "median": statistics.median(lengths),
                    "max": max(lengths),
                    "total": sum(lengths),
                },
            },
        )
        write_jsonl(self.dir.data / f"{split}_dropped.jsonl", dropped)
        if truncated or dropped:
            console.print(
                f"[yellow]{split}: {truncated} examples truncated to {cfg.training.max_seq_len} tokens, "
                f"{len(dropped)} dropped (see {self.dir.data / f'{split}_dropped.jsonl'})[/]"
            )
        if not examples:
            raise TunesmithError(f"{split}: no examples with target tokens; raise training.max_seq_len")
        return examples


def check_recipe_method(recipe: Any, config: RunConfig) -> None:
    """Reject a method that makes no sense for the task, before any data or model loads."""
    allowed = getattr(recipe, "METHODS", None)
    if allowed is not None and config.method.name not in allowed:
        why = getattr(recipe, "METHOD_REASONS", {}).get(config.method.name)  # optional: {method: why not}
        raise ConfigError(
            f"method.name is '{config.method.name}', which the '{config.task.name}' task does not support"
            f"{f': {why}' if why else ''}.\n"
            f"  fix: use one of: {', '.join(allowed)}"
        )


def _saved_tokenizer(model_dir: Path) -> ResolvedModel:
    """The tokenizer saved with the trained model (it carries the chat template used in training)."""
    return ResolvedModel(str(model_dir), str(model_dir.resolve()), "local")


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
