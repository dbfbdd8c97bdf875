"""ONNX export of a trained run's tuned model, parity-checked against PyTorch with onnxruntime.

``torch.onnx.export`` (its ``torch.export``-based exporter) writes the graph; optimum's exporter is not used because
``optimum-onnx`` (0.1.0) requires transformers < 4.58. Covered: task-head encoders (classify, tag) and causal LMs
of the llama family (chat runs), whole weights or with a LoRA / IA3 adapter merged in first. The graph has dynamic
batch and sequence axes; decoders have no KV cache (see ``onnx_runtime``).

Before the folder is kept, onnxruntime runs it on probe inputs from the run's own data and its logits are compared
with the tuned PyTorch model's (fp32): the max |logit difference| must stay within ``TOLERANCE`` of the logit scale
and every argmax must agree; a decoder's greedy continuation of prompts from the data must be token for token the
same as ``generate``'s. The figures go to ``export.json``; a failed check refuses the export with them.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from tunesmith.core.config import validate_config
from tunesmith.core.errors import TunesmithError
from tunesmith.core.fs import read_jsonl, write_json
from tunesmith.data.records import Chat, Labeled, record_from_dict
from tunesmith.data.records import texts as record_texts
from tunesmith.data.render import render_prompt
from tunesmith.models.adapt import PEFT_METHODS
from tunesmith.pipeline.probes import probe_inputs
from tunesmith.pipeline.trained import TrainedRun
from tunesmith.ship.onnx_runtime import META_FILE, MODEL_FILE, RUN_CONFIG, OnnxCausalLM, load_onnx, positions

SUBDIR = "onnx"  # the ONNX folder inside an export
OPSET = 18
# max |logit difference| allowed, as a fraction of the largest |logit| (at least 1e-4 absolute). fp32 kernels of
# onnxruntime and PyTorch differ by ~1e-7 relative on the test models; a broken graph is off by ~100%.
TOLERANCE = 1e-4
GREEDY_TOKENS = 16  # new tokens compared per probe prompt for decoders
ENCODER_TASKS = {"SEQ_CLS": "sequence_classification", "TOKEN_CLS": "token_classification"}
DECODER_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "olmo", "olmo2", "granite")
ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def onnx_refusal(run: TrainedRun) -> str | None:
    """Why this run cannot be exported to ONNX, or None (checked before any model loads)."""
    config = run.config
    task_type = run.recipe.peft_task_type
    if config.multihead:
        return "a multi-head run shares one encoder between heads; ONNX export covers single-task runs"
    head = config.task.name in ("classify", "tag") and task_type in ENCODER_TASKS
    if not head and task_type != "CAUSAL_LM":
        return (
            "ONNX export covers classify and tag runs (task heads) and causal LMs (chat, lm, preference runs); "
            f"this is a '{config.task.name}' run"
        )
    method = config.method.name
    if method in ("prefix", "prompt"):
        return (
            f"method '{method}' feeds trained virtual tokens through the attention cache at every call, which the "
            "exported graph has no input for; train with lora, ia3 or full weights to export ONNX"
        )
    if method == "qlora":
        return "a qlora run's base is 4-bit (bitsandbytes), which ONNX cannot express; train with lora to export ONNX"
    return None


def require_exportable(run: TrainedRun) -> None:
    why = onnx_refusal(run)
    if why is not None:
        raise TunesmithError(f"{run.dir.root}: cannot export to ONNX: {why}")


def write_onnx(run: TrainedRun, folder: Path) -> dict[str, Any]:
    """Write the run's tuned model as ``folder/model.onnx`` with its tokenizer, config and run config; check it
    with onnxruntime against the PyTorch model; return the figures."""
    require_exportable(run)
    tuned, tokenizer = run.load_tuned()
    decoder = run.recipe.peft_task_type == "CAUSAL_LM"
    model_type = getattr(_plain(tuned).config, "model_type", "?")
    if decoder and model_type not in DECODER_TYPES:
        raise TunesmithError(
            f"{run.dir.root}: cannot export to ONNX: model type '{model_type}' is not a llama-family decoder "
            f"(supported: {', '.join(DECODER_TYPES)})"
        )
    batches = _decoder_probes(run, tokenizer) if decoder else _encoder_probes(run, tokenizer)
    reference = [_logits(tuned, batch, decoder) for batch in batches]
    prompts = _prompts(run, tokenizer, batches) if decoder else []
    expected_tokens = [_torch_greedy(tuned, tokenizer, p) for p in prompts]
    model = tuned.merge_and_unload() if run.config.method.name in PEFT_METHODS else tuned
    inputs = ["input_ids", "attention_mask", "position_ids"] if decoder else _encoder_inputs(model, tokenizer)
    folder.mkdir(parents=True, exist_ok=True)
    export_graph(model, inputs, batches[0], folder / MODEL_FILE)
    model.config.save_pretrained(folder)
    if decoder:
        from tunesmith.models.merge import generation_config_for

        generation_config_for(model, tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    kind = "causal_lm" if decoder else ENCODER_TASKS[run.recipe.peft_task_type]
    write_json(folder / META_FILE, {"kind": kind, "inputs": inputs, "outputs": ["logits"], "kv_cache": False})
    (folder / RUN_CONFIG).write_text(
        yaml.safe_dump(run.config.model_dump(mode="json"), sort_keys=False), encoding="utf-8"
    )
    return _parity(folder, batches, reference, prompts, expected_tokens, tokenizer, inputs)


def onnx_backend(path: Path, open_run: Callable[[Path], TrainedRun]) -> tuple[TrainedRun, Callable[[], Any]]:
    """For ``predict --backend onnx``: the run (its recipe and config say how rows become inputs) and a loader of
    the onnxruntime model and tokenizer.

    ``path`` is an export with an ONNX folder (``DIR`` or ``DIR/onnx``), read alone; or a run (directory or config
    file), exported to a temporary folder first, with the same parity check as ``tunesmith export --onnx``."""
    folder = path / SUBDIR if (path / SUBDIR / MODEL_FILE).is_file() else path
    if (folder / MODEL_FILE).is_file():
        config_path = folder / RUN_CONFIG
        if not config_path.is_file():
            raise TunesmithError(f"{folder}: an ONNX model without {RUN_CONFIG}; export it again with tunesmith")
        raw = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        run = TrainedRun(validate_config(raw if isinstance(raw, dict) else {}, source=str(config_path)), root=path)
        return run, lambda: load_onnx(folder)
    run = open_run(path)
    require_exportable(run)

    def export_and_load() -> tuple[Any, Any]:
        with tempfile.TemporaryDirectory(prefix="tunesmith-onnx-") as tmp:
            write_onnx(run, Path(tmp) / SUBDIR)
            return load_onnx(Path(tmp) / SUBDIR)  # onnxruntime and the tokenizer hold everything in memory

    return run, export_and_load


# ------------------------------------------------------------ export


class _Logits(torch.nn.Module):
    """The model called with named inputs, returning its logits alone (no cache)."""

    def __init__(self, model: Any, inputs: list[str], decoder: bool) -> None:
        super().__init__()
        self.model, self.inputs, self.decoder = model, inputs, decoder

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        kwargs: dict[str, Any] = dict(zip(self.inputs, tensors, strict=True))
        if self.decoder:
            kwargs["use_cache"] = False
        return self.model(**kwargs).logits


def export_graph(model: Any, inputs: list[str], example: dict[str, torch.Tensor], path: Path) -> None:
    """Write ``model``'s logits as an ONNX graph taking ``inputs`` (batch and sequence axes dynamic), traced on
    ``example``; a model torch.onnx cannot convert is refused with its reason."""
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    decoder = "position_ids" in inputs
    example = _complete(example, inputs)
    args = tuple(example[name] for name in inputs)
    try:
        # the exporter prints its progress and warns about axis names and pytree internals: nothing for a user
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                _Logits(model.eval(), inputs, decoder).eval(),
                args,
                dynamo=True,
                input_names=inputs,
                output_names=["logits"],
                opset_version=OPSET,
                dynamic_shapes=(tuple({0: batch, 1: seq} for _ in inputs),),  # forward(*tensors)
                verbose=False,
            )
            assert program is not None
            program.save(str(path), external_data=_size(model) > 1_500_000_000)  # protobuf stops at 2 GB
    except TunesmithError:
        raise
    except Exception as exc:  # the exporter's failures are many kinds; the user needs which model and why
        raise TunesmithError(
            f"cannot export to ONNX: torch.onnx could not convert this {type(model).__name__}: {_reason(exc)}"
        ) from exc


def _reason(exc: Exception) -> str:
    """The line of torch.onnx's long report that says what failed (its 'Exception summary')."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for i, line in enumerate(lines[:-1]):
        if line.startswith("## Exception summary"):
            return lines[i + 1]
    return lines[0] if lines else type(exc).__name__


def _size(model: Any) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _plain(model: Any) -> Any:
    """The transformers model inside a peft wrapper (or the model itself)."""
    from peft import PeftModel

    return model.get_base_model() if isinstance(model, PeftModel) else model


def _encoder_inputs(model: Any, tokenizer: Any) -> list[str]:
    """input_ids, attention_mask, and token_type_ids when the tokenizer makes them and the model takes them."""
    takes = inspect.signature(model.forward).parameters
    return [n for n in ENCODER_INPUTS if n in tokenizer.model_input_names and n in takes]


def _complete(batch: dict[str, torch.Tensor], inputs: list[str]) -> dict[str, torch.Tensor]:
    batch = dict(batch)
    if "position_ids" in inputs:
        batch["position_ids"] = positions(batch["attention_mask"])
    if "token_type_ids" in inputs and "token_type_ids" not in batch:
        batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
    return {name: batch[name] for name in inputs}


# ------------------------------------------------------------ probes and parity


def _records(run: TrainedRun, n: int) -> list[Any]:
    for split in ("test", "validation", "train"):
        path = run.dir.split(split)
        if path.is_file():
            records = [record_from_dict(row) for row in read_jsonl(path)[:n]]
            if records:
                return records
    return []


def _encoder_probes(run: TrainedRun, tokenizer: Any) -> list[dict[str, torch.Tensor]]:
    """One padded batch of the run's texts (pairs kept), cut to its max_seq_len; random words without data."""
    from tunesmith.recipes.classify import collate_inputs, encode_text, pads_left

    records = _records(run, 8)
    pairs = [
        (r.text, r.text_pair) if isinstance(r, Labeled) else (" ".join(record_texts(r)), None) for r in records
    ] or [("a few words to check the exported model with", None), ("another text", None)]
    encoded = [encode_text(tokenizer, text, pair, run.config.training.max_seq_len) for text, pair in pairs]
    if len(encoded) == 1:
        encoded.append(encoded[0])  # a batch of 2 at least: the export must not fix the batch size at 1
    batch = collate_inputs(
        [e[0] for e in encoded], [e[1] for e in encoded], tokenizer.pad_token_id, pads_left(tokenizer)
    )
    return [batch]


def _decoder_probes(run: TrainedRun, tokenizer: Any) -> list[dict[str, torch.Tensor]]:
    """The run's probe sequences one by one, and all of them as one left-padded batch."""
    probes = [probe["input_ids"] for probe in probe_inputs(run.dir, tokenizer, max_len=256)]
    singles = [{"input_ids": ids, "attention_mask": torch.ones_like(ids)} for ids in probes]
    width = max(ids.shape[1] for ids in probes)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(probes), width), pad, dtype=torch.long)
    mask = torch.zeros((len(probes), width), dtype=torch.long)
    for row, p in enumerate(probes):
        ids[row, width - p.shape[1] :], mask[row, width - p.shape[1] :] = p[0], 1
    return [{"input_ids": ids, "attention_mask": mask}, *singles]


def _prompts(run: TrainedRun, tokenizer: Any, batches: list[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
    """Up to 2 chat prompts from the data (ready for the reply), else the first half of the first probe."""
    chats = [r for r in _records(run, 4) if isinstance(r, Chat)][:2]
    if chats:
        texts = [render_prompt(c.prompt_messages(), tokenizer, c.tools) for c in chats]
        return [tokenizer(t, add_special_tokens=False, return_tensors="pt")["input_ids"][:, :256] for t in texts]
    first = batches[1]["input_ids"]
    return [first[:, : max(1, first.shape[1] // 2)]]


@torch.no_grad()
def _logits(model: Any, batch: dict[str, torch.Tensor], decoder: bool) -> torch.Tensor:
    """The PyTorch model's logits on a probe batch, called as tunesmith calls it (decoders: generate's positions)."""
    inputs = dict(batch)
    if decoder:
        inputs["position_ids"] = positions(inputs["attention_mask"])
    return model(**inputs).logits.float()


@torch.no_grad()
def _torch_greedy(model: Any, tokenizer: Any, prompt: torch.Tensor) -> list[int]:
    output = model.generate(
        input_ids=prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=GREEDY_TOKENS,
        do_sample=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return output[0, prompt.shape[1] :].tolist()


def _parity(
    folder: Path,
    batches: list[dict[str, torch.Tensor]],
    reference: list[torch.Tensor],
    prompts: list[torch.Tensor],
    expected_tokens: list[list[int]],
    tokenizer: Any,
    inputs: list[str],
) -> dict[str, Any]:
    """Run the written graph with onnxruntime and compare; raise with the figures when it differs."""
    import onnxruntime

    model, _ = load_onnx(folder)
    diff, scale, argmax_same = 0.0, 0.0, True
    for batch, expected in zip(batches, reference, strict=True):
        got = model(**batch).logits.float()
        keep = batch["attention_mask"].bool() if got.dim() == 3 else torch.ones(len(got), dtype=torch.bool)
        got, want = got[keep], expected[keep]  # pad positions of a padded batch are not predictions
        diff = max(diff, float((got - want).abs().max()))
        scale = max(scale, float(want.abs().max()))
        argmax_same &= bool(torch.equal(got.argmax(-1), want.argmax(-1)))
    allowed = max(TOLERANCE, TOLERANCE * scale)
    checks: dict[str, Any] = {
        "file": f"{SUBDIR}/{MODEL_FILE}",
        "exporter": f"torch.onnx (dynamo) {torch.__version__}, opset {OPSET}",
        "onnxruntime": onnxruntime.__version__,
        "inputs": inputs,
        "kv_cache": False,
        "probe_batches": len(batches),
        "max_logit_diff": diff,
        "logit_scale": scale,
        "allowed": allowed,
        "same_argmax": argmax_same,
    }
    failures = []
    if diff > allowed:
        failures.append(f"max |logit difference| {diff:.3g} > allowed {allowed:.3g} (logit scale {scale:.3g})")
    if not argmax_same:
        failures.append(f"the argmax differs on some probe position (max |logit difference| {diff:.3g})")
    if prompts:
        assert isinstance(model, OnnxCausalLM)  # load_onnx makes one for a decoder's folder
        got_tokens = [
            model.generate(
                input_ids=p,
                attention_mask=torch.ones_like(p),
                max_new_tokens=GREEDY_TOKENS,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
            .sequences[0, p.shape[1] :]
            .tolist()
            for p in prompts
        ]
        same = got_tokens == expected_tokens
        checks |= {"greedy_prompts": len(prompts), "greedy_tokens": GREEDY_TOKENS, "same_greedy_tokens": same}
        if not same:
            failures.append(f"greedy tokens differ: onnxruntime {got_tokens} vs PyTorch {expected_tokens}")
    if failures:
        raise TunesmithError("the ONNX model disagrees with the run's PyTorch model: " + "; ".join(failures))
    return checks
