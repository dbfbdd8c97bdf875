"""Exported ONNX models run with onnxruntime, shaped like the ``transformers`` models the prediction code calls.

An ONNX folder (``tunesmith export --onnx``) holds ``model.onnx``, the tokenizer, the model's ``config.json``
(``id2label`` for classifiers) and the run's config. Its graph takes ``input_ids`` and ``attention_mask`` (plus
``token_type_ids`` for BERT-like encoders, ``position_ids`` for decoders) and returns ``logits``.

Decoders are exported without a KV cache: ``OnnxCausalLM.generate`` recomputes the whole sequence at every new
token (greedy only). That costs O(length^2) and suits the small models this export is for; a user with a large
model should serve the Hugging Face export instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tunesmith.core.errors import TunesmithError

MODEL_FILE = "model.onnx"
META_FILE = "onnx.json"  # what the graph takes and returns, and the kind of model it is
RUN_CONFIG = "run_config.yaml"  # the run's resolved config: how rows become inputs (predict from the export alone)


def session(path: Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session over ``path`` (``threads``: intra-op threads; None lets onnxruntime choose)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: its warnings about unused initializers say nothing to a user
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@dataclass
class _Output:
    logits: torch.Tensor


@dataclass
class _Generated:
    sequences: torch.Tensor
    scores: list[torch.Tensor]  # per generated step: the next-token logits of every row (first step only here)


class OnnxModel:
    """A graph returning ``logits`` called like a ``transformers`` model: ``model(**batch).logits``."""

    def __init__(self, folder: Path, threads: int | None = None) -> None:
        from transformers import AutoConfig

        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        self.kind: str = meta["kind"]
        self.inputs: list[str] = meta["inputs"]
        self.config = AutoConfig.from_pretrained(folder)
        self.session = session(folder / MODEL_FILE, threads)
        self._device = torch.zeros(0)

    def eval(self) -> OnnxModel:
        return self

    def parameters(self) -> Any:
        """One CPU tensor, so callers that ask for the model's device get the CPU."""
        yield self._device

    def __call__(self, **batch: torch.Tensor) -> _Output:
        if "position_ids" in self.inputs and "position_ids" not in batch:
            batch["position_ids"] = positions(batch["attention_mask"])
        if "token_type_ids" in self.inputs and "token_type_ids" not in batch:
            batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
        feed = {name: batch[name].cpu().numpy().astype(np.int64) for name in self.inputs}
        (logits,) = self.session.run(["logits"], feed)
        return _Output(torch.from_numpy(logits))


class OnnxCausalLM(OnnxModel):
    """A decoder's graph with the subset of ``generate()`` the chat predictions use: greedy, batched, left-padded."""

    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        max_new_tokens: int,
        eos_token_id: int | list[int],
        pad_token_id: int | None,
        do_sample: bool = False,
        **_: Any,
    ) -> _Generated:
        """Greedy continuation of each (left-padded) row, as ``transformers`` pads it: a row that has emitted an
        EOS continues with the pad token; stops when every row has, or after ``max_new_tokens``."""
        if do_sample:
            raise TunesmithError("the onnx backend decodes greedily; drop --temperature or use --backend torch")
        eos = torch.tensor(eos_token_id if isinstance(eos_token_id, list) else [eos_token_id])
        pad = pad_token_id if pad_token_id is not None else int(eos[0])
        ids, mask = input_ids.cpu(), attention_mask.cpu()
        done = torch.zeros(len(ids), dtype=torch.bool)
        scores: list[torch.Tensor] = []
        for _ in range(max_new_tokens):
            last = self(input_ids=ids, attention_mask=mask).logits[:, -1, :]
            if not scores:
                scores.append(last)
            token = torch.where(done, pad, last.argmax(-1))
            ids = torch.cat([ids, token[:, None]], dim=1)
            mask = torch.cat([mask, torch.ones_like(token)[:, None]], dim=1)
            done |= torch.isin(token, eos)
            if bool(done.all()):
                break
        return _Generated(ids, scores)


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded batch, as ``transformers``' generate makes them (pads at 0)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def load_onnx(folder: Path, threads: int | None = None) -> tuple[OnnxModel, Any]:
    """The exported model (a decoder's with greedy ``generate``) and its tokenizer, from an ONNX folder."""
    from transformers import AutoTokenizer

    if not (folder / MODEL_FILE).is_file() or not (folder / META_FILE).is_file():
        raise TunesmithError(
            f"{folder}: no ONNX model here ({MODEL_FILE} and {META_FILE}).\n"
            "  fix: export it with `tunesmith export RUN --out DIR --onnx` and pass DIR"
        )
    kind = json.loads((folder / META_FILE).read_text(encoding="utf-8"))["kind"]
    model = OnnxCausalLM(folder, threads) if kind == "causal_lm" else OnnxModel(folder, threads)
    return model, AutoTokenizer.from_pretrained(folder)
