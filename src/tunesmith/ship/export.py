"""Export a trained run: a merged Hugging Face folder or the adapter alone, checked for equivalence, with a model card.

Every export is verified before it is put in place: the written folder is loaded back the way a user would load
it (plain ``transformers``, or ``peft`` on the base model) and its logits on prompts from the run's own data are
compared with those of the run's tuned model. A run whose evaluation gate (``eval.gate``) fails is refused unless
forced, and the model card then says it was forced.
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
from tunesmith.models.gguf_writer import KINDS as GGUF_KINDS
from tunesmith.models.gguf_writer import write_gguf
from tunesmith.models.load import load_causal_lm
from tunesmith.models.merge import DTYPES, check_loaded, logits, max_diff, reference_outputs, save_whole
from tunesmith.pipeline.gate import require_gate
from tunesmith.pipeline.probes import probe_inputs
from tunesmith.pipeline.trained import TrainedRun
from tunesmith.ship.card import write_model_card
from tunesmith.ship.onnx_export import SUBDIR as ONNX_SUBDIR
from tunesmith.ship.onnx_export import export_onnx, require_exportable, write_onnx

MERGEABLE = ("lora", "qlora", "ia3")  # peft methods whose weights fold into the base model
# max |logit difference| of a GGUF, as a fraction of the logit scale. q8_0 on the 64-wide test model measured
# 4-5.4% depending on the trained weights; a broken conversion is off by ~100%.
GGUF_TOLERANCE = {"f16": 0.01, "q8_0": 0.1}


@dataclass
class ExportResult:
    out: Path
    kind: str  # merged | adapter | full
    dtype: str
    max_logit_diff: float  # written export loaded back (fp32 forward) vs the run's tuned model (fp64 forward)
    checks: dict[str, Any] = field(default_factory=dict)
    gguf: Path | None = None
    gate: dict[str, Any] | None = None  # the evaluation gate's report; None when the run has no gate


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

    A failed evaluation gate raises ``GateFailed`` naming the failed checks, unless ``force``."""
    if dtype not in DTYPES:
        raise TunesmithError(f"--dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    if gguf is not None and gguf not in GGUF_KINDS:
        raise TunesmithError(f"--gguf {gguf!r}: expected one of {', '.join(GGUF_KINDS)}")
    if out.exists():
        raise TunesmithError(f"{out} already exists; choose a new --out folder or remove it first")
    if onnx:
        require_exportable(run)
    if onnx and run.recipe.peft_task_type != "CAUSAL_LM":  # task heads: no Hugging Face folder here yet, ONNX alone
        gate = require_gate(run, force, "export")
        checks = export_onnx(run, out, gate).checks
        return ExportResult(out, "onnx", "fp32", checks["max_logit_diff"], {"onnx": checks}, gate=gate)
    kind = export_kind(run.config.method.name, merge or bool(gguf))
    gate = require_gate(run, force, "export")
    with Progress(4 + bool(gguf) + onnx, "export: load the tuned model", unit="steps") as progress:
        tuned, tokenizer = run.load_tuned()
        progress.advance()
        progress.describe("export: reference outputs")
        reference = reference_outputs(tuned, probe_inputs(run.dir, tokenizer))
        checks = reference.checks
        progress.advance()
        with atomic_dir(out) as tmp:
            progress.describe(f"export: write the {kind} model")
            if kind == "adapter":
                tuned.to(DTYPES[dtype]).save_pretrained(tmp, safe_serialization=True)
                loaded = load_adapter(load_causal_lm(run.config.model), tmp).eval()
            else:
                loaded = save_whole(tuned, tokenizer, tmp, reference, merge=kind == "merged", dtype=dtype)
            tokenizer.save_pretrained(tmp)
            progress.advance()
            progress.describe("export: verify it loads back")
            diff = check_loaded(loaded, reference, dtype)
            progress.advance()
            gguf_path = None
            if gguf:
                progress.describe(f"export: GGUF {gguf}")
                gguf_path = _write_gguf(loaded, tokenizer, tmp, gguf, reference.probes, checks)
                progress.advance()
            if onnx:
                progress.describe("export: ONNX, checked with onnxruntime")
                checks["onnx"] = write_onnx(run, tmp / ONNX_SUBDIR)
                progress.advance()
            result = ExportResult(out, kind, dtype, diff, checks, gguf_path and out / gguf_path.relative_to(tmp), gate)
            write_json(tmp / "export.json", _summary(run, result))
            write_model_card(run, tmp / "README.md", kind, dtype, diff, checks, folder_name=out.name, gate=gate)
    return result


def export_kind(method: str, merge: bool) -> str:
    """adapter (peft layout), merged (adapter folded into the weights) or full (the run saved whole weights)."""
    if method not in PEFT_METHODS and method != "adapter":
        return "full"  # full, freeze, prune: the run's model is already whole weights
    if not merge:
        if method == "adapter":
            raise TunesmithError("bottleneck adapters are tunesmith's own layout; export them with --merge")
        return "adapter"
    if method not in MERGEABLE:
        raise TunesmithError(
            f"method '{method}' adds {'virtual tokens' if method in ('prefix', 'prompt') else 'layers'} "
            "that cannot be folded into the base weights; export the adapter without --merge / --gguf"
        )
    return "merged"


def _write_gguf(
    model: Any, tokenizer: Any, folder: Path, kind: str, probes: list[torch.Tensor], checks: dict[str, Any]
) -> Path:
    """Write ``model-<kind>.gguf``, load it back with transformers, and compare its logits and tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # In a folder of its own: next to config.json / tokenizer files, transformers would mix their settings in.
    path = write_gguf(model, tokenizer, _mkdir(folder / "gguf") / f"model-{kind}.gguf", kind)
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
    texts = [tokenizer.decode(ids[0]) for ids in probes]
    same_ids = [gguf_tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts] == [
        tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts
    ]
    if not same_ids or gguf_tokenizer.eos_token != tokenizer.eos_token:
        raise TunesmithError(f"the tokenizer stored in {path.name} differs from the model's (splits or EOS)")
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _summary(run: TrainedRun, result: ExportResult) -> dict[str, Any]:
    return {
        "run": str(run.dir.root),
        "base_model": run.config.model.name,
        "kind": result.kind,
        "dtype": result.dtype,
        "max_logit_diff": result.max_logit_diff,
        "checks": result.checks,
        **({"gate": result.gate} if result.gate is not None else {}),
    }
