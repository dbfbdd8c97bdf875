"""Fold a trained model into plain weights and prove the folder written equals it.

Used by ``tunesmith export`` and by a sequential run handing a stage's model to the next stage: the folder is loaded
back the way a user would load it (plain ``transformers`` with the task's ``AutoModelFor...`` class, safetensors
only) and its outputs on probe inputs are compared with the tuned model's, computed in fp64 so fp32 rounding noise
is measured, not guessed. A probe is one row's model inputs (``input_ids``, and ``decoder_input_ids`` for an
encoder-decoder); the outputs compared are the model's logits (a span head's start and end logits, stacked).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tunesmith.core.errors import TunesmithError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TOLERANCE = 1e-4  # max |logit difference| allowed for an fp32 export (or the fp32 noise of the run's model)

Probe = dict[str, torch.Tensor]  # one row's model inputs, batch of 1


@dataclass
class Reference:
    """The tuned model's outputs on the probes: fp32 as it runs, and fp64 as the yardstick."""

    probes: list[Probe]
    fp32: list[torch.Tensor]
    fp64: list[torch.Tensor]
    checks: dict[str, Any] = field(default_factory=dict)

    @property
    def allowed(self) -> float:
        """An fp32 copy must be within 1e-4 of the fp64 outputs, or twice the fp32 noise where that is larger."""
        return max(TOLERANCE, 2 * self.checks["fp32_noise"])


def reference_outputs(tuned: Any, probes: list[Probe]) -> Reference:
    fp32 = logits(tuned, probes)
    fp64 = logits(copy.deepcopy(tuned).double(), probes)
    noise = max_diff(fp32, fp64)
    reference = Reference(probes, fp32, fp64, {"probes": len(probes), "fp32_noise": noise})
    reference.checks["allowed_fp32"] = reference.allowed
    return reference


def save_whole(
    tuned: Any,
    tokenizer: Any,
    folder: Path,
    reference: Reference,
    merge: bool,
    dtype: str,
    auto_class: Any = None,
    config_update: dict[str, Any] | None = None,
) -> Any:
    """Write ``tuned`` (its adapter merged first when ``merge``, task heads' ``modules_to_save`` included) as a plain
    folder; check and return it loaded back with ``auto_class`` (default ``AutoModelForCausalLM``).

    ``config_update`` sets fields of the saved config (e.g. ``id2label``). Fails, naming the step, if merging or the
    round trip through the folder changes the outputs beyond the reference's tolerance (fp32) or if the weights
    read back differ from the ones written.
    """
    checks = reference.checks
    model = tuned.merge_and_unload() if merge else tuned
    checks["merge_max_logit_diff"] = max_diff(logits(model, reference.probes), reference.fp64)
    require(checks["merge_max_logit_diff"], reference.allowed, "merging the adapter into the base weights")
    for key, value in (config_update or {}).items():
        setattr(model.config, key, value)
    if model.can_generate():  # a task head (classifier, tagger, span head) has no generation config
        model.generation_config = generation_config_for(model, tokenizer)
    model.to(DTYPES[dtype]).save_pretrained(folder, safe_serialization=True)
    checks["weights_identical"] = same_weights(model, load_plain(folder, DTYPES[dtype], auto_class))
    if not checks["weights_identical"]:
        raise TunesmithError(f"the weights loaded back from {folder} differ from the ones written")
    return load_plain(folder, auto_class=auto_class)


def check_loaded(loaded: Any, reference: Reference, dtype: str) -> float:
    """Max |logit difference| of a folder loaded back against the fp64 reference, and whether it picks the same
    class / token / span boundary everywhere (both enforced for fp32)."""
    outputs = logits(loaded, reference.probes)
    diff = max_diff(outputs, reference.fp64)
    checks = reference.checks
    checks["max_logit_diff_vs_run_fp32"] = max_diff(outputs, reference.fp32)
    checks["argmax_changed"] = argmax_changes(outputs, reference.fp64, margin=2 * max(diff, reference.allowed))
    checks["same_argmax"] = checks["argmax_changed"] == 0
    if dtype == "fp32":
        require(diff, reference.allowed, "loading the exported folder back")
        if not checks["same_argmax"]:
            raise TunesmithError(
                f"the exported folder picks another class or token than the run's model at {checks['argmax_changed']} "
                "probe positions"
            )
    return diff


def argmax_changes(outputs: list[torch.Tensor], expected: list[torch.Tensor], margin: float) -> int:
    """Positions whose argmax differs from ``expected``'s, not counting near-ties (top two within ``margin``)."""
    changed = 0
    for actual, wanted in zip(outputs, expected, strict=True):
        if wanted.shape[-1] < 2:  # a single score (reward model): no argmax to keep
            continue
        top2 = wanted.topk(2, dim=-1).values
        clear = (top2[..., 0] - top2[..., 1]) > margin
        changed += int(((actual.argmax(-1) != wanted.argmax(-1)) & clear).sum())
    return changed


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


@torch.no_grad()
def logits(model: Any, probes: list[Probe]) -> list[torch.Tensor]:
    """The model's outputs on each probe, fp64 on the CPU: its logits, or a span head's start and end logits stacked
    (shape ``[1, 2, tokens]``, so the argmax over the last axis is the start and the end position)."""
    model.eval()
    device = next(model.parameters()).device
    outputs = []
    for probe in probes:
        out = model(**{key: value.to(device) for key, value in probe.items()})
        found = out["logits"] if "logits" in out else torch.stack([out["start_logits"], out["end_logits"]], 1)
        outputs.append(found.double().cpu())
    return outputs


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def require(diff: float, allowed: float, step: str) -> None:
    if diff > allowed:
        raise TunesmithError(f"{step} changed the model's outputs: max |logit difference| {diff:.2e} > {allowed:.2e}")


def load_plain(folder: Path, dtype: torch.dtype = torch.float32, auto_class: Any = None) -> Any:
    """Load an exported folder exactly as a user would: plain transformers (``auto_class``, default
    ``AutoModelForCausalLM``), safetensors only."""
    if auto_class is None:
        from transformers import AutoModelForCausalLM

        auto_class = AutoModelForCausalLM
    return auto_class.from_pretrained(folder, dtype=dtype, use_safetensors=True).eval()


def same_weights(written: Any, loaded: Any) -> bool:
    expected, actual = written.state_dict(), loaded.state_dict()
    return expected.keys() == actual.keys() and all(torch.equal(expected[k], actual[k]) for k in expected)
