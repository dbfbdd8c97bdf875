"""One Run = one config + one run directory. Stages (prepare -> train -> evaluate) are resumable and idempotent.

A stage is recorded in ``state.json`` only after all its outputs are in place, so a run killed mid-stage
redoes that stage and never looks complete.
"""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from tunesmith.config import RunConfig, load_config
from tunesmith.data.prepare import prepare_data, write_prepared
from tunesmith.data.records import Chat
from tunesmith.data.render import ensure_chat_template
from tunesmith.errors import TunesmithError
from tunesmith.io import RunDir, atomic_dir, read_json, read_jsonl, write_json, write_jsonl, write_text
from tunesmith.models.adapt import apply_method, count_parameters
from tunesmith.models.load import load_causal_lm, load_tokenizer
from tunesmith.models.resolve import resolve_model
from tunesmith.recipes import get_recipe

STAGES = ("prepare", "train", "evaluate")
console = Console(stderr=True, soft_wrap=True)


class Run:
    """A fine-tuning run; also the Python API: ``Run.from_file("quickstart.yaml").run()``."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.dir = RunDir(config.run_dir)
        self.recipe = get_recipe(config.task.name)

    @classmethod
    def from_file(cls, path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Run:
        return cls(load_config(path, overrides))

    # ------------------------------------------------------------ orchestration

    def run(self, force: bool = False) -> dict[str, Any] | None:
        """Run every stage not yet done; return the evaluation metrics (None when evaluation is off)."""
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
            getattr(self, stage)()
        return self.results()

    def active_stages(self) -> list[str]:
        return [s for s in STAGES if s != "evaluate" or self.config.eval.enabled]

    def open(self, force: bool = False) -> None:
        """Create the run directory, or check an existing one was made by the same config."""
        resolved = self.config.to_yaml()
        if self.dir.config.is_file() and not force:
            previous = yaml.safe_load(self.dir.config.read_text(encoding="utf-8"))
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

    def check_model(self) -> None:
        """Fail before any work if the model cannot be found (resolving converts a GGUF once)."""
        load_tokenizer(self.config.model, resolve_model(self.config.model.name))

    def results(self) -> dict[str, Any] | None:
        path = self.dir.eval / "metrics.json"
        return read_json(path) if path.is_file() else None

    # ------------------------------------------------------------ stages

    def prepare(self) -> None:
        cfg = self.config
        console.print("[bold]prepare[/]: loading and validating data")
        prepared = prepare_data(cfg.data, cfg.task, cfg.training.seed)
        with atomic_dir(self.dir.data) as tmp:
            write_prepared(prepared, tmp)
        report = prepared.report()
        console.print(f"  rows {report['rows']}, rejected {report['rejected']} (see {self.dir.data / 'rejects.jsonl'})")
        self.dir.mark_done("prepare", report)

    def train(self) -> Any:
        """Train and save the model; return the trained (unwrapped) model."""
        from tunesmith.engine.loop import make_accelerator, train

        cfg = self.config
        resolved = resolve_model(cfg.model.name)
        tokenizer = load_tokenizer(cfg.model, resolved)
        if ensure_chat_template(tokenizer):
            console.print("[yellow]the tokenizer has no chat template; using a ChatML fallback[/]")
        train_examples = self._encode_split("train", tokenizer)
        val_examples = self._encode_split("validation", tokenizer) if self.dir.split("validation").is_file() else None

        import torch

        model = load_causal_lm(cfg.model, resolved)
        torch.manual_seed(cfg.training.seed)  # adapter initialisation is part of the seeded run
        model = apply_method(model, cfg.method)
        trainable, total = count_parameters(model)
        console.print(
            f"[bold]train[/]: {cfg.model.name} ({resolved.kind}), method {cfg.method.name}, "
            f"{trainable:,} of {total:,} parameters trainable ({100 * trainable / total:.2f}%)"
        )
        self.dir.metrics.unlink(missing_ok=True)
        accelerator = make_accelerator(cfg.training.precision)
        summary = train(
            model,
            train_examples,
            self.recipe.task_fns(tokenizer),
            cfg.training,
            accelerator=accelerator,
            metrics_path=self.dir.metrics,
            val_examples=val_examples,
        )
        if accelerator.is_main_process:
            with atomic_dir(self.dir.model) as tmp:
                accelerator.unwrap_model(model).save_pretrained(tmp, safe_serialization=True)
                tokenizer.save_pretrained(tmp)
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
                },
            )
        return accelerator.unwrap_model(model)

    def evaluate(self) -> dict[str, Any]:
        import torch

        cfg = self.config
        if not self.dir.is_done("train"):
            raise TunesmithError(f"{self.dir.root}: evaluation needs a trained model; run `tunesmith train` first")
        chats = [Chat.from_dict(r) for r in read_jsonl(self.dir.split("test"))]
        references = [c.reference() for c in chats]
        labels = list(dict.fromkeys(cfg.data.label_names.values())) or None
        device = "cuda" if torch.cuda.is_available() else "cpu"
        tokenizer = load_tokenizer(cfg.model)
        ensure_chat_template(tokenizer)
        gen = {"max_new_tokens": cfg.eval.max_new_tokens, "batch_size": cfg.eval.batch_size}
        console.print(f"[bold]evaluate[/]: {len(chats)} test rows")

        model = load_causal_lm(cfg.model).to(device)
        base_preds = (
            self.recipe.predict(model, tokenizer, chats, description="base", **gen) if cfg.eval.baseline else None
        )
        model = self._load_tuned(model).to(device)
        tuned_preds = self.recipe.predict(model, tokenizer, chats, description="tuned", **gen)

        metrics = {"tuned": self.recipe.score(tuned_preds, references, labels)}
        if base_preds is not None:
            metrics = {"base": self.recipe.score(base_preds, references, labels), **metrics}
        rows = [
            {
                "source": c.source,
                "input": c.prompt_messages()[-1].content,
                "reference": ref,
                "base": base_preds[i] if base_preds is not None else None,
                "tuned": tuned_preds[i],
            }
            for i, (c, ref) in enumerate(zip(chats, references, strict=True))
        ]
        with atomic_dir(self.dir.eval) as tmp:
            write_jsonl(tmp / "predictions.jsonl", rows)
            write_json(tmp / "metrics.json", metrics)
        self.dir.mark_done("evaluate", {"rows": len(chats)})
        return metrics

    # ------------------------------------------------------------ helpers

    def _load_tuned(self, base_model: Any) -> Any:
        if self.config.method.name == "lora":
            from peft import PeftModel

            return PeftModel.from_pretrained(base_model, str(self.dir.model))
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(str(self.dir.model), use_safetensors=True)

    def _encode_split(self, split: str, tokenizer: Any) -> list[Any]:
        """Tokenize a prepared split; rows left with no target tokens are dropped, counted and kept with a reason."""
        cfg = self.config
        examples, dropped, lengths, truncated = [], [], [], 0
        for row in read_jsonl(self.dir.split(split)):
            chat = Chat.from_dict(row)
            encoded = self.recipe.encode(chat, tokenizer, cfg.task.train_on, cfg.training.max_seq_len)
            truncated += encoded.truncated
            lengths.append(len(encoded.input_ids))
            if encoded.n_targets == 0:
                dropped.append(
                    {
                        "source": chat.source,
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


def _changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = dict.fromkeys([*old, *new])
        return [k for key in keys for k in _changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [prefix.rstrip(".")]
