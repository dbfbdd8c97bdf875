"""Fold a trained model into plain weights and prove the folder written equals it.

Used by ``tunesmith export --merge`` and by a sequential run handing a stage's model to the next stage: the folder
is loaded back the way a user would load it (plain ``transformers``, safetensors only) and its logits on probe
inputs are compared with the tuned model's, computed in fp64 so fp32 rounding noise is measured, not guessed.
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


@dataclass
class Reference:
    """The tuned model's outputs on the probes: fp32 as it runs, and fp64 as the yardstick."""

    probes: list[torch.Tensor]
    fp32: list[torch.Tensor]
    fp64: list[torch.Tensor]
    checks: dict[str, Any] = field(default_factory=dict)

    @property
    def allowed(self) -> float:
        """An fp32 copy must be within 1e-4 of the fp64 outputs, or twice the fp32 noise where that is larger."""
        return max(TOLERANCE, 2 * self.checks["fp32_noise"])


def reference_outputs(tuned: Any, probes: list[torch.Tensor]) -> Reference:
    fp32 = logits(tuned, probes)
    fp64 = logits(copy.deepcopy(tuned).double(), probes)
    noise = max_diff(fp32, fp64)
    reference = Reference(probes, fp32, fp64, {"probes": len(probes), "fp32_noise": noise})
    reference.checks["allowed_fp32"] = reference.allowed
    return reference


def save_whole(tuned: Any, tokenizer: Any, folder: Path, reference: Reference, merge: bool, dtype: str) -> Any:
    """Write ``tuned`` (its adapter merged first when ``merge``) as a plain folder; check and return it loaded back.

    Fails, naming the step, if merging or the round trip through the folder changes the outputs beyond the
    reference's tolerance (fp32) or if the weights read back differ from the ones written.
    """
    checks = reference.checks
    model = tuned.merge_and_unload() if merge else tuned
    checks["merge_max_logit_diff"] = max_diff(logits(model, reference.probes), reference.fp64)
    require(checks["merge_max_logit_diff"], reference.allowed, "merging the adapter into the base weights")
    model.generation_config = generation_config_for(model, tokenizer)
    model.to(DTYPES[dtype]).save_pretrained(folder, safe_serialization=True)
    checks["weights_identical"] = same_weights(model, load_plain(folder, DTYPES[dtype]))
    if not checks["weights_identical"]:
        raise TunesmithError(f"the weights loaded back from {folder} differ from the ones written")
    return load_plain(folder)


def check_loaded(loaded: Any, reference: Reference, dtype: str) -> float:
    """Max |logit difference| of a folder loaded back against the fp64 reference (enforced for fp32)."""
    outputs = logits(loaded, reference.probes)
    diff = max_diff(outputs, reference.fp64)
    reference.checks["max_logit_diff_vs_run_fp32"] = max_diff(outputs, reference.fp32)
    if dtype == "fp32":
        require(diff, reference.allowed, "loading the exported folder back")
    return diff


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
def logits(model: Any, probes: list[torch.Tensor]) -> list[torch.Tensor]:
    model.eval()
    device = next(model.parameters()).device
    return [model(input_ids=ids.to(device)).logits.double().cpu() for ids in probes]


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def require(diff: float, allowed: float, step: str) -> None:
    if diff > allowed:
        raise TunesmithError(f"{step} changed the model's outputs: max |logit difference| {diff:.2e} > {allowed:.2e}")


def load_plain(folder: Path, dtype: torch.dtype = torch.float32) -> Any:
    """Load an exported folder exactly as a user would: plain transformers, safetensors only."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, use_safetensors=True).eval()


def same_weights(written: Any, loaded: Any) -> bool:
    expected, actual = written.state_dict(), loaded.state_dict()
    return expected.keys() == actual.keys() and all(torch.equal(expected[k], actual[k]) for k in expected)
