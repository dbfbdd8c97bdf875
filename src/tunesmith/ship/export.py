"""Export a trained run of any task: a Hugging Face folder (merged or whole weights) or the adapter alone, checked for
equivalence, with a model card.

Every export is verified before it is put in place: the written folder is loaded back the way a user would load
it (plain ``transformers`` with the task's ``AutoModelFor...`` class, or ``peft`` on the base model with its head)
and its outputs on rows of the run's own data are compared with those of the run's tuned model (``models/merge.py``).
A multi-head run is written as one such folder per task (``<out>/<task>/``). A run whose evaluation gate
(``eval.gate``) fails is refused unless forced, and the model card then says it was forced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tunesmith.core.errors import TunesmithError
from tunesmith.core.fs import atomic_dir, write_json
from tunesmith.core.progress import Progress
from tunesmith.models.adapt import PEFT_METHODS, load_adapter
from tunesmith.models.bottleneck import load_adapters, save_adapters
from tunesmith.models.gguf_families import ARCHITECTURES
from tunesmith.models.gguf_writer import KINDS as GGUF_KINDS
from tunesmith.models.gguf_writer import write_gguf
from tunesmith.models.merge import (
    DTYPES,
    Probe,
    Reference,
    check_loaded,
    logits,
    max_diff,
    reference_outputs,
    save_whole,
)
from tunesmith.pipeline.gate import require_gate
from tunesmith.pipeline.probes import probe_inputs, probe_prompts
from tunesmith.pipeline.trained import TrainedRun
from tunesmith.ship.card import write_model_card
from tunesmith.ship.export_task import ExportTarget, check_head, export_target, refuse_unsupported
from tunesmith.ship.gguf_check import check_in_llama_cpp, greedy_replies, llama_cpp_missing
from tunesmith.ship.onnx_export import SUBDIR as ONNX_SUBDIR
from tunesmith.ship.onnx_export import require_exportable, write_onnx

MERGEABLE = ("lora", "qlora", "ia3")  # peft methods whose weights fold into the base model
# max |logit difference| of a GGUF, as a fraction of the logit scale. q8_0 on the 64-wide test model measured
# 4-5.4% depending on the trained weights; a broken conversion is off by ~100%.
GGUF_TOLERANCE = {"f16": 0.01, "q8_0": 0.1}
STEPS = 4  # per folder written: load the tuned model, reference outputs, write, verify


@dataclass
class ExportResult:
    out: Path
    kind: str  # merged | adapter | bottleneck | full
    dtype: str
    max_logit_diff: float  # written export loaded back (fp32 forward) vs the run's tuned model (fp64 forward)
    checks: dict[str, Any] = field(default_factory=dict)  # a multi-head run's: {"heads": {task: checks}}
    gguf: Path | None = None
    gate: dict[str, Any] | None = None  # the evaluation gate's report; None when the run has no gate
    task: str = "sft"
    heads: dict[str, ExportTarget] = field(default_factory=dict)  # folder ("" for the top folder) -> its task


@dataclass
class Written:
    """One folder written and loaded back: the loaded model, its tokenizer, and what it was checked against."""

    loaded: Any
    tokenizer: Any
    reference: Reference
    diff: float


def export_run(
    run: TrainedRun,
    out: Path,
    merge: bool = False,
    dtype: str = "fp32",
    gguf: str | None = None,
    force: bool = False,
    onnx: bool = False,
) -> ExportResult:
    """Write the export to ``out`` (atomically; ``out`` must not exist) and return what was checked; with ``onnx``
    also ``out/onnx`` (ship/onnx_export.py), its parity figures in ``checks["onnx"]``.

    A failed evaluation gate raises ``GateFailed`` naming the failed checks, unless ``force``; an option the task
    cannot be exported with (``--gguf`` for a task head, ``--merge`` for prefix tuning) raises a ``TunesmithError``
    saying why."""
    if dtype not in DTYPES:
        raise TunesmithError(f"--dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    if gguf is not None and gguf not in GGUF_KINDS:
        raise TunesmithError(f"--gguf {gguf!r}: expected one of {', '.join(GGUF_KINDS)}")
    if out.exists():
        raise TunesmithError(f"{out} already exists; choose a new --out folder or remove it first")
    if onnx:
        require_exportable(run)
    kind = export_kind(run.config.method.name, merge or bool(gguf))
    parts = export_parts(run)
    for _, target in parts.values():
        refuse_unsupported(target, gguf)
    gate = require_gate(run, force, "export")
    with Progress(STEPS * len(parts) + bool(gguf) + onnx, "export", unit="steps") as progress, atomic_dir(out) as tmp:
        written = {
            folder: write_checked(part, target, kind, dtype, tmp / folder, progress, folder)
            for folder, (part, target) in parts.items()
        }
        checks = written[""].reference.checks if "" in written else {"heads": _head_checks(written)}
        diff = max(w.diff for w in written.values())
        gguf_path = None
        if gguf:
            progress.describe(f"export: GGUF {gguf}")
            main = written[""]
            prompts = probe_prompts(run.dir, main.tokenizer)
            gguf_path = _write_gguf(main.loaded, main.tokenizer, tmp, gguf, main.reference.probes, prompts, checks)
            progress.advance()
        if onnx:
            progress.describe("export: ONNX, checked with onnxruntime")
            checks["onnx"] = write_onnx(run, tmp / ONNX_SUBDIR)
            progress.advance()
        heads = {folder: target for folder, (_, target) in parts.items()}
        task = run.config.task.name if "" in parts else "multihead"
        result = ExportResult(
            out, kind, dtype, diff, checks, gguf_path and out / gguf_path.relative_to(tmp), gate, task, heads
        )
        write_json(tmp / "export.json", _summary(run, result))
        write_model_card(run, tmp / "README.md", kind, dtype, diff, checks, out.name, gate, heads)
    return result


def export_parts(run: TrainedRun) -> dict[str, tuple[TrainedRun, ExportTarget]]:
    """The folders an export writes: ``{"": (run, target)}``, or one per task of a multi-head run (``<task>/``)."""
    if not run.config.multihead:
        return {"": (run, export_target(run))}
    parts = {}
    for name in run.task_configs():
        task_run = run.task_run(name)
        parts[name] = (task_run, export_target(task_run))
    return parts


def write_checked(
    run: TrainedRun, target: ExportTarget, kind: str, dtype: str, folder: Path, progress: Progress, label: str = ""
) -> Written:
    """Write ``run``'s tuned model to ``folder`` as ``kind`` and load it back as a user would; the outputs on
    probe rows must match the run's model (fp32: within the reference's tolerance, with the same argmax)."""
    step = f"export{f' {label}' if label else ''}"
    progress.describe(f"{step}: load the tuned model")
    tuned, tokenizer = run.load_tuned()
    check_head(tuned, target)
    progress.advance()
    progress.describe(f"{step}: reference outputs")
    reference = reference_outputs(tuned, _probes(run, tuned, tokenizer))
    progress.advance()
    progress.describe(f"{step}: write the {kind} model")
    if kind == "adapter":
        tuned.to(DTYPES[dtype]).save_pretrained(folder, safe_serialization=True)
        loaded = load_adapter(run.load_base(), folder).eval()
    elif kind == "bottleneck":
        save_adapters(tuned.to(DTYPES[dtype]), folder, run.config.method.adapter)
        loaded = load_adapters(run.load_base(), folder).eval()
    else:
        merged = kind == "merged"
        loaded = save_whole(tuned, tokenizer, folder, reference, merged, dtype, target.auto_class, target.config_update)
    tokenizer.save_pretrained(folder)
    progress.advance()
    progress.describe(f"{step}: verify it loads back")
    diff = check_loaded(loaded, reference, dtype)
    progress.advance()
    return Written(loaded, tokenizer, reference, diff)


def _probes(run: TrainedRun, model: Any, tokenizer: Any) -> list[Probe]:
    """Rows of the run's data as the model's inputs (an encoder-decoder's target after its decoder start token)."""
    config = model.config
    start = config.decoder_start_token_id if config.is_encoder_decoder else None
    return probe_inputs(run.dir, tokenizer, run.config.training.max_seq_len, start)


def _head_checks(written: dict[str, Written]) -> dict[str, Any]:
    return {folder: {**w.reference.checks, "max_logit_diff": w.diff} for folder, w in written.items()}


def export_kind(method: str, merge: bool) -> str:
    """adapter (peft layout), bottleneck (tunesmith's adapter layout), merged (adapter folded into the weights) or
    full (the run saved whole weights)."""
    if method not in PEFT_METHODS and method != "adapter":
        return "full"  # full, freeze, prune: the run's model is already whole weights
    if not merge:
        return "bottleneck" if method == "adapter" else "adapter"
    if method == "adapter":
        raise TunesmithError(
            "method 'adapter' (bottleneck adapters) adds nonlinear layers that cannot be folded into the base "
            "weights.\n  fix: export without --merge / --gguf (the adapters alone, in tunesmith's layout, loaded with "
            "tunesmith.models.bottleneck.load_adapters), or train with lora, ia3 or full for a merged export"
        )
    if method not in MERGEABLE:
        raise TunesmithError(
            f"method '{method}' adds {'virtual tokens' if method in ('prefix', 'prompt') else 'layers'} "
            "that cannot be folded into the base weights; export the adapter without --merge / --gguf"
        )
    return "merged"


def _write_gguf(
    model: Any,
    tokenizer: Any,
    folder: Path,
    kind: str,
    probes: list[Probe],
    prompts: list[str],
    checks: dict[str, Any],
) -> Path:
    """Write ``model-<kind>.gguf``, load it back with transformers (logits, tokenizer), then run it in llama.cpp
    (tokenization, greedy replies to ``prompts``, end of turn; see ``gguf_check``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # In a folder of its own: next to config.json / tokenizer files, transformers would mix their settings in.
    path = write_gguf(model, tokenizer, _mkdir(folder / "gguf") / f"model-{kind}.gguf", kind)
    missing = llama_cpp_missing()
    if not ARCHITECTURES[model.config.model_type].reloads:  # only llama.cpp can check this family's file
        if missing:
            raise TunesmithError(f"--gguf for a {model.config.model_type} model needs the llama.cpp check: {missing}")
        checks["gguf"] = {
            "file": path.name,
            "transformers": "not loaded back: its GGUF loader reads this family differently",
        }
        checks["gguf"]["llama_cpp"] = check_in_llama_cpp(
            path, tokenizer, kind, greedy_replies(model, tokenizer, prompts)
        )
        return path
    back = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    expected = logits(model, probes)
    diff = max_diff(logits(back, probes), expected)
    scale = max(float(x.abs().max()) for x in expected)
    checks["gguf"] = {"file": path.name, "max_logit_diff": diff, "logit_scale": scale}
    if diff > GGUF_TOLERANCE[kind] * scale:
        raise TunesmithError(
            f"the {kind} GGUF loaded back gives logits {diff:.3g} away from the exported model "
            f"(allowed {GGUF_TOLERANCE[kind]:.0%} of the logit scale {scale:.3g})"
        )
    gguf_tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    texts = [tokenizer.decode(probe["input_ids"][0]) for probe in probes]
    same_ids = [gguf_tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts] == [
        tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts
    ]
    if not same_ids or gguf_tokenizer.eos_token != tokenizer.eos_token:
        raise TunesmithError(f"the tokenizer stored in {path.name} differs from the model's (splits or EOS)")
    checks["gguf"]["llama_cpp"] = (
        {"skipped": missing}
        if missing
        else check_in_llama_cpp(path, tokenizer, kind, greedy_replies(model, tokenizer, prompts))
    )
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _summary(run: TrainedRun, result: ExportResult) -> dict[str, Any]:
    folders = {
        folder or ".": {
            "task": target.task,
            "auto_class": target.class_name,
            "pipeline_tag": target.pipeline_tag,
            **({"labels": target.labels} if target.labels else {}),
        }
        for folder, target in result.heads.items()
    }
    return {
        "run": str(run.dir.root),
        "base_model": run.config.model.name,
        "task": result.task,
        "folders": folders,
        "kind": result.kind,
        "dtype": result.dtype,
        "max_logit_diff": result.max_logit_diff,
        "checks": result.checks,
        **({"gate": result.gate} if result.gate is not None else {}),
    }
