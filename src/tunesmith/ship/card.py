"""A model card (README.md) for an exported run, written from what the run directory records.

Base model, data (row counts, rejects, licence lines of each data file's SOURCE.md), method, hyperparameters,
training summary, base vs tuned metrics and limitations: nothing in it is typed by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tunesmith.core.config import METHOD_SECTIONS
from tunesmith.core.environment import summary
from tunesmith.core.fs import read_json, write_text
from tunesmith.pipeline.trained import TrainedRun
from tunesmith.ship.export_task import ExportTarget, usage
from tunesmith.ship.gguf_check import describe as describe_llama_cpp_check

# How an export of each kind was loaded back for its check (merged and full: plain transformers alone).
LOADED_WITH = {"adapter": " and peft", "bottleneck": " and tunesmith's `load_adapters`"}

# The hub ids of the offline aliases (models/resolve.py), so the card names a base model anyone can load.
ALIAS_HUB_IDS = {
    "smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "minilm-l6": "sentence-transformers/all-MiniLM-L6-v2",
}


def write_model_card(
    run: TrainedRun,
    path: Path,
    kind: str,
    dtype: str,
    max_logit_diff: float,
    checks: dict[str, Any],
    folder_name: str,
    gate: dict[str, Any] | None = None,
    heads: dict[str, ExportTarget] | None = None,
) -> None:
    write_text(path, model_card(run, kind, dtype, max_logit_diff, checks, folder_name, gate, heads))


def model_card(
    run: TrainedRun,
    kind: str,
    dtype: str,
    max_logit_diff: float,
    checks: dict[str, Any],
    folder_name: str,
    gate: dict[str, Any] | None = None,
    heads: dict[str, ExportTarget] | None = None,
) -> str:
    """The card of an export; ``heads`` maps each folder written ("" for the export's own folder, a task's name for
    a multi-head run's) to its task's export (a chat model when not given)."""
    from transformers import AutoModelForCausalLM

    heads = heads or {"": ExportTarget(run.config.task.name, AutoModelForCausalLM)}
    cfg = run.config
    name = run.dir.root.name
    base = ALIAS_HUB_IDS.get(cfg.model.name, cfg.model.name)
    on_hub = base.count("/") == 1 and not Path(base).expanduser().exists()
    library = "peft" if kind == "adapter" else "transformers"
    first = next(iter(heads.values()))
    front = {
        **({"base_model": base} if on_hub else {}),  # the hub's metadata wants a hub id, not a local path
        "library_name": library,
        "pipeline_tag": first.pipeline_tag,
        "tags": ["tunesmith", *dict.fromkeys([cfg.task.name, *(t.task for t in heads.values())]), cfg.method.name],
    }
    lora = cfg.method.name in ("lora", "qlora")
    method = f"{cfg.method.name} (r {cfg.method.lora.r}, alpha {cfg.method.lora.alpha})" if lora else cfg.method.name
    form = {
        "adapter": "LoRA adapter only (peft layout)",
        "bottleneck": "bottleneck adapters only (tunesmith's layout)",
        "merged": "LoRA merged into the base weights",
        "full": "",
    }
    if kind == "adapter" and cfg.method.name not in ("lora", "qlora"):
        form["adapter"] = f"the {cfg.method.name} adapter only (peft layout)"
    multi = "" not in heads
    task = "a head per task on one shared backbone (" + ", ".join(heads) + ")" if multi else f"task `{cfg.task.name}`"
    sections = [
        f"---\n{yaml.safe_dump(front, sort_keys=False)}---",
        f"# {name}",
        f"`{cfg.model.name}` fine-tuned with tunesmith: {task}, method {method}. "
        f"This export: {form[kind] or 'all weights'}, {dtype}.",
        "## Model\n\n" + _layout(heads, folder_name),
        "## Base model\n\n"
        f"`{base}`{f' (revision {cfg.model.revision})' if cfg.model.revision else ''}"
        f"{f', used through the tunesmith alias `{cfg.model.name}`' if base != cfg.model.name else ''}. "
        "Its licence and terms of use apply to this model as well.",
        "## Data\n\n" + _data_section(run),
        "## Method and hyperparameters\n\n" + _hyperparameters(cfg.model_dump(mode="json")),
        "## Training\n\n" + _training(run),
        "## Environment\n\n" + _environment(run),
        "## Evaluation\n\n" + (_task_evaluations(run) if multi else _evaluation(run)),
        *([f"## Evaluation gate\n\n{_gate(gate)}"] if gate is not None else []),
        "## Use\n\n"
        + "\n\n".join(
            (f"`{folder}/`:\n\n" if folder else "")
            + usage(target, kind, f"{folder_name}/{folder}" if folder else folder_name, base, run)
            for folder, target in heads.items()
        ),
        "## Export check\n\n" + _export_check(kind, dtype, max_logit_diff, checks, multi),
        "## Limitations\n\n" + _limitations(run, heads),
    ]
    return "\n\n".join(sections) + "\n"


def _layout(heads: dict[str, ExportTarget], folder_name: str) -> str:
    """What each folder holds: its task, the class that loads it, the pipeline that serves it and its labels."""
    lines = []
    for folder, target in heads.items():
        where = f"`{folder_name}/{folder}/`" if folder else "This folder"
        labels = f"; labels (id2label): {', '.join(f'`{x}`' for x in target.labels)}" if target.labels else ""
        lines.append(
            f"- {where}: task `{target.task}`, loads with `{target.class_name}.from_pretrained` (pipeline "
            f"`{target.pipeline_tag}`){labels}."
        )
    if "" not in heads:
        lines.append(
            "\nThe backbone was trained once, for every task; each task's folder holds a complete copy of it with "
            "that task's head and the tokenizer, so each loads on its own with plain transformers."
        )
    return "\n".join(lines)


def _export_check(kind: str, dtype: str, max_logit_diff: float, checks: dict[str, Any], multi: bool) -> str:
    gguf = checks.get("gguf")
    first = next(iter(checks["heads"].values())) if multi else checks
    text = (
        f"{'Each folder' if multi else 'This folder'} was loaded back with plain transformers"
        f"{LOADED_WITH.get(kind, '')} after writing, and its outputs (logits) on {first['probes']} rows "
        f"of the run's data were compared with the run's tuned model computed in fp64: max |difference| "
        f"{max_logit_diff:.2e}"
        + (
            f" (required: at most {first['allowed_fp32']:.1e}; the run's own fp32 outputs are "
            f"{first['fp32_noise']:.1e} from the fp64 ones), the same top class, token or span everywhere."
            if dtype == "fp32"
            else f" ({dtype} rounding of the weights)."
        )
    )
    if gguf:
        reloaded = (
            f"was loaded back with transformers: max |logit difference| {gguf['max_logit_diff']:.2e} at a logit "
            f"scale of {gguf['logit_scale']:.2f}. "
            if "max_logit_diff" in gguf
            else "was not loaded back with transformers (its GGUF loader reads this family differently). "
        )
        text += (
            f"\n\n`gguf/{gguf['file']}` (for llama.cpp and compatible runtimes) {reloaded}"
            + describe_llama_cpp_check(gguf.get("llama_cpp") or {"skipped": "not run"})
        )
    return text


def _environment(run: TrainedRun) -> str:
    """Where the run was trained (``environment.json``), as a list; says so when the run did not record it."""
    if not run.dir.environment.is_file():
        return "- not recorded (this run was made by a tunesmith older than environment.json)"
    return "\n".join(f"- {label}: {value}" for label, value in summary(read_json(run.dir.environment)))


def _data_section(run: TrainedRun) -> str:
    cfg = run.config.data
    report_path = run.dir.data / "report.json"
    report = read_json(report_path) if report_path.is_file() else {}
    lines = []
    for split in ("train", "validation", "test"):
        source = getattr(cfg, split, None)
        rows = report.get("rows", {}).get(split)
        if rows is None and not source:
            continue
        where = f"`{Path(source).name}`" if source else "held out from train"
        lines.append(f"- {split}: {rows if rows is not None else '?'} rows from {where}")
    if report:
        lines.append(f"- rows rejected while preparing: {report.get('rejected', 0)}")
    if cfg.prompt_template:
        lines.append(f"- prompt template: `{cfg.prompt_template!r}`; target: `{cfg.completion_template!r}`")
    licences = _licence_lines(cfg)
    if licences:
        lines.append("\nLicence notes from the data's SOURCE.md:\n")
        lines += [f"> {line}" for line in licences]
    else:
        lines.append("- licence: not recorded next to the data files; check it before sharing this model")
    return "\n".join(lines)


def _licence_lines(cfg: Any) -> list[str]:
    """Lines that mention a licence in a SOURCE.md next to the data files (the project's convention)."""
    found: list[str] = []
    for split in ("train", "validation", "test"):
        source = getattr(cfg, split, None)
        card = Path(source).parent / "SOURCE.md" if source else None
        if card and card.is_file():
            paragraphs = card.read_text(encoding="utf-8").split("\n\n")
            for paragraph in paragraphs:
                text = " ".join(paragraph.split())
                if "licen" in text.lower() and text not in found:
                    found.append(text)
    return found


def _hyperparameters(config: dict[str, Any]) -> str:
    rows = ["| setting | value |", "|---|---|"]
    method = dict(config.get("method", {}))
    used = METHOD_SECTIONS.get(method.get("name"), ())
    method = {k: v for k, v in method.items() if not isinstance(v, dict) or k in used}  # only the method's own
    for section, values in (("task", config.get("task", {})), ("method", method), ("training", config["training"])):
        for key, value in _flatten(values, section):
            rows.append(f"| `{key}` | `{value}` |")
    return "\n".join(rows)


def _flatten(node: Any, prefix: str) -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [item for key, value in node.items() for item in _flatten(value, f"{prefix}.{key}")]
    return [(prefix, node)]


def _training(run: TrainedRun) -> str:
    info = run.dir.read_state()["stages"].get("train", {})
    if not info:
        return "Not recorded."
    parts = [f"{info['steps']} optimizer steps"] if "steps" in info else []
    for key, label in (("train_loss", "final training loss"), ("val_loss", "validation loss")):
        if info.get(key) is not None:
            parts.append(f"{label} {info[key]:.4f}")
    if "tokens" in info:
        parts.append(f"{info['tokens']:,} tokens")
    if "seconds" in info:
        parts.append(f"{info['seconds']} s")
    return ", ".join(parts) + "."


def _evaluation(run: TrainedRun) -> str:
    path = run.dir.eval / "metrics.json"
    if not path.is_file():
        return "This run was not evaluated (eval.enabled was false or evaluation did not finish)."
    metrics = read_json(path)
    columns = [c for c in ("base", "tuned") if c in metrics]
    header = "| metric | " + " | ".join(columns) + (" | delta |" if len(columns) == 2 else " |")
    rows = [header, "|---" * (len(columns) + 1 + (len(columns) == 2)) + "|"]
    for metric in metrics["tuned"]:
        values = [metrics[c].get(metric) for c in columns]
        cells = [f"{v:.4f}" if isinstance(v, float) else str(v) for v in values]
        if len(columns) == 2 and all(isinstance(v, int | float) for v in values):
            cells.append(f"{values[1] - values[0]:+.4f}")
        rows.append(f"| {metric} | " + " | ".join(cells) + " |")
    test_rows = run.dir.read_state()["stages"].get("evaluate", {}).get("rows", "?")
    said = (
        f"Greedy answers on {test_rows} test rows; `base` is the base model asked the same prompts zero-shot."
        if "base" in metrics
        else f"Predictions on {test_rows} test rows (a fresh task head has no meaningful base model to compare)."
    )
    return f"{said}\n\n" + "\n".join(rows)


def _task_evaluations(run: TrainedRun) -> str:
    """A multi-head run's evaluation: each task's metrics on its own test split (``eval/tasks.json``)."""
    path = run.dir.eval / "tasks.json"
    if not path.is_file():
        return "This run was not evaluated (eval.enabled was false or evaluation did not finish)."
    rows = ["| task | metric | tuned |", "|---|---|---|"]
    for task, metrics in read_json(path).items():
        for metric, value in metrics.get("tuned", {}).items():
            rows.append(
                f"| {task} | {metric} | {value:.4f} |"
                if isinstance(value, float)
                else f"| {task} | {metric} | {value} |"
            )
    return "Each task's predictions on its own test split.\n\n" + "\n".join(rows)


def _gate(gate: dict[str, Any]) -> str:
    """The gate's checks; a forced export of a failed gate says so first, in bold."""
    lines = [f"- {'held' if c['passed'] else '**failed**'}: {c['check']} ({c['detail']})" for c in gate["checks"]]
    if gate["passed"]:
        return "Every condition of the run's evaluation gate (`eval.gate`) held:\n\n" + "\n".join(lines)
    return (
        "**Exported with `--force` although the run's evaluation gate (`eval.gate`) failed.** Conditions:\n\n"
        + "\n".join(lines)
    )


def _limitations(run: TrainedRun, heads: dict[str, ExportTarget]) -> str:
    cfg = run.config
    chat = all(t.causal for t in heads.values())
    template = f" with the prompt template `{cfg.data.prompt_template!r}`" if cfg.data.prompt_template else ""
    items = [
        "It inherits the base model's knowledge, biases and licence; fine-tuning does not remove them.",
        "The scores above come from one test slice of the same source as the training data; expect lower "
        "scores on other kinds of text.",
        "Prompt it the way it was trained: the chat template in this folder"
        + template
        + (f" and the system prompt `{cfg.task.system_prompt!r}`" if cfg.task.system_prompt else "")
        + "."
        if chat
        else f"Give it inputs the way it was trained{template or ' (the texts as they are in the training data)'}.",
        f"Trained on sequences of at most {cfg.training.max_seq_len} tokens; longer inputs were truncated.",
    ]
    return "\n".join(f"- {item}" for item in items)
