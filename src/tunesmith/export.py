"""Export a trained run: a merged Hugging Face folder or the adapter alone, checked for equivalence, with a model card.

Every export is verified before it is put in place: the written folder is loaded back the way a user would load
it (plain ``transformers``, or ``peft`` on the base model) and its logits on prompts from the run's own data are
compared with those of the run's tuned model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tunesmith.card import write_model_card
from tunesmith.data.records import Chat, record_from_dict
from tunesmith.data.records import texts as record_texts
from tunesmith.data.render import render_prompt
from tunesmith.errors import TunesmithError
from tunesmith.io import atomic_dir, read_jsonl, write_json
from tunesmith.models.adapt import PEFT_METHODS, load_adapter
from tunesmith.models.gguf_writer import KINDS as GGUF_KINDS
from tunesmith.models.gguf_writer import write_gguf
from tunesmith.models.load import load_causal_lm
from tunesmith.run import Run

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MERGEABLE = ("lora", "qlora", "ia3")  # peft methods whose weights fold into the base model
TOLERANCE = 1e-4  # max |logit difference| allowed for an fp32 export (or the fp32 noise of the run's model)
PROBES = 4  # prompts from the run's data used to compare logits
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


def export_run(run: Run, out: Path, merge: bool = False, dtype: str = "fp32", gguf: str | None = None) -> ExportResult:
    """Write the export to ``out`` (atomically; ``out`` must not exist) and return what was checked."""
    if dtype not in DTYPES:
        raise TunesmithError(f"--dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    if gguf is not None and gguf not in GGUF_KINDS:
        raise TunesmithError(f"--gguf {gguf!r}: expected one of {', '.join(GGUF_KINDS)}")
    if out.exists():
        raise TunesmithError(f"{out} already exists; choose a new --out folder or remove it first")
    kind = export_kind(run.config.method.name, merge or bool(gguf))
    tuned, tokenizer = run.load_tuned()
    probes = probe_inputs(run, tokenizer)
    # The reference is the run's model evaluated in fp64: its outputs free of fp32 rounding noise. The run's own
    # fp32 outputs differ from it too (`fp32_noise`, ~7e-5 for SmolLM2-135M), so an fp32 export must be within
    # 1e-4 of it, or within twice that noise where the noise alone is larger (bigger models).
    fp32 = _logits(tuned, probes)
    reference = _logits(copy.deepcopy(tuned).double(), probes)
    noise = _max_diff(fp32, reference)
    allowed = max(TOLERANCE, 2 * noise)
    checks: dict[str, Any] = {"probes": len(probes), "fp32_noise": noise, "allowed_fp32": allowed}
    with atomic_dir(out) as tmp:
        if kind == "adapter":
            tuned.to(DTYPES[dtype]).save_pretrained(tmp, safe_serialization=True)
            loaded = load_adapter(load_causal_lm(run.config.model), tmp).eval()
        else:
            model = tuned.merge_and_unload() if kind == "merged" else tuned
            checks["merge_max_logit_diff"] = _max_diff(_logits(model, probes), reference)
            _require(checks["merge_max_logit_diff"], allowed, "merging the adapter into the base weights")
            model.generation_config = generation_config_for(model, tokenizer)
            model.to(DTYPES[dtype]).save_pretrained(tmp, safe_serialization=True)
            loaded = _load_plain(tmp)
            checks["weights_identical"] = _same_weights(model, _load_plain(tmp, DTYPES[dtype]))
            if not checks["weights_identical"]:
                raise TunesmithError(f"the weights loaded back from {tmp} differ from the ones written")
        tokenizer.save_pretrained(tmp)
        outputs = _logits(loaded, probes)
        diff = _max_diff(outputs, reference)
        checks["max_logit_diff_vs_run_fp32"] = _max_diff(outputs, fp32)
        if dtype == "fp32":
            _require(diff, allowed, "loading the exported folder back")
        gguf_path = _write_gguf(loaded, tokenizer, tmp, gguf, probes, checks) if gguf else None
        result = ExportResult(out, kind, dtype, diff, checks, gguf_path and out / gguf_path.relative_to(tmp))
        write_json(tmp / "export.json", _summary(run, result))
        write_model_card(run, tmp / "README.md", kind, dtype, diff, checks, folder_name=out.name)
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
    expected = _logits(model, probes)
    diff = _max_diff(_logits(back, probes), expected)
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


def generation_config_for(model: Any, tokenizer: Any) -> Any:
    """The model's generation config with the tokenizer's EOS (the chat template's end of turn) first.

    Base models often list a different end token (``<|endoftext|>``) than the one their chat template closes a
    turn with; without the template's token a plain ``generate`` never stops.
    """
    from transformers import GenerationConfig

    config = copy.deepcopy(model.generation_config) or GenerationConfig.from_model_config(model.config)
    existing = config.eos_token_id
    existing = existing if isinstance(existing, list) else [existing] if existing is not None else []
    eos = list(dict.fromkeys([tokenizer.eos_token_id, *existing]))
    config.eos_token_id = eos[0] if len(eos) == 1 else eos
    config.pad_token_id = tokenizer.pad_token_id
    return config


def probe_inputs(run: Run, tokenizer: Any) -> list[torch.Tensor]:
    """Token ids of a few whole examples from the run's prepared data (a chat's prompt and reply, other records'
    texts, e.g. an lm run's documents), for comparisons."""
    for split in ("test", "validation", "train"):
        path = run.dir.split(split)
        if path.is_file():
            records = [record_from_dict(row) for row in read_jsonl(path)[:PROBES]]
            if records:
                texts = [
                    render_prompt(r.prompt_messages(), tokenizer) + r.reference()
                    if isinstance(r, Chat)
                    else "\n".join(record_texts(r))
                    for r in records
                ]
                return [tokenizer(t, add_special_tokens=False, return_tensors="pt")["input_ids"] for t in texts]
    generator = torch.Generator().manual_seed(0)
    return [torch.randint(0, len(tokenizer), (1, 32), generator=generator) for _ in range(PROBES)]


@torch.no_grad()
def _logits(model: Any, probes: list[torch.Tensor]) -> list[torch.Tensor]:
    model.eval()
    device = next(model.parameters()).device
    return [model(input_ids=ids.to(device)).logits.double().cpu() for ids in probes]


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def _require(diff: float, allowed: float, step: str) -> None:
    if diff > allowed:
        raise TunesmithError(f"{step} changed the model's outputs: max |logit difference| {diff:.2e} > {allowed:.2e}")


def _load_plain(folder: Path, dtype: torch.dtype = torch.float32) -> Any:
    """Load an exported folder exactly as a user would: plain transformers, safetensors only."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, use_safetensors=True).eval()


def _same_weights(written: Any, loaded: Any) -> bool:
    expected, actual = written.state_dict(), loaded.state_dict()
    return expected.keys() == actual.keys() and all(torch.equal(expected[k], actual[k]) for k in expected)


def _summary(run: Run, result: ExportResult) -> dict[str, Any]:
    return {
        "run": str(run.dir.root),
        "base_model": run.config.model.name,
        "kind": result.kind,
        "dtype": result.dtype,
        "max_logit_diff": result.max_logit_diff,
        "checks": result.checks,
    }
