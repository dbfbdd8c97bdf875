"""Next-token cross-entropy that computes the output head only where there is a target.

A causal LM's vocabulary projection (``lm_head``) is the largest single matrix product of a small model
(SmolLM2-135M: 576 x 49,152) and its fp32 logits are the largest activation (rows x length x vocabulary x 4
bytes, kept for backward). Prompt tokens, padding and a packed row's first tokens have no target, so
computing their logits is waste. Here the model runs as usual, but a forward pre-hook on its output head
takes the final hidden states and hands the head an empty sequence; the loss then applies the head only at
target positions, in chunks, with the gradient computed chunk by chunk (a fused linear cross-entropy), so
the full logits tensor never exists.

Exact: the same loss and gradients as the full computation (``tests/engine/test_lm_loss.py``). Falls back to
the full logits where it cannot apply: label smoothing, models that post-process logits (soft-capping,
logit scaling), and methods that prepend virtual tokens (prompt tuning: the hidden states are then longer
than the labels, detected by shape).

Written by hand: liger-kernel's fused linear cross-entropy does the same on GPUs (Triton), and is used there
when installed; nothing equivalent exists for CPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from tunesmith.data.render import IGNORE_INDEX

# Logit post-processing that the head-only fast path would skip: fall back to the full logits.
_LOGIT_POSTPROCESSING = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")
CHUNK_ELEMENTS = 1 << 23  # logits per chunk (32 MB in fp32)


def unwrap(model: Any) -> Any:
    """The model inside DDP / FSDP / torch.compile wrappers (peft wrappers are kept)."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


def fast_path_possible(model: Any, label_smoothing: float = 0.0) -> bool:
    """Whether target-only logits can give exactly the full computation's loss for this model."""
    if label_smoothing:
        return False
    inner = unwrap(model)
    config = getattr(inner, "config", None)
    if any(getattr(config, name, None) not in (None, 1, 1.0) for name in _LOGIT_POSTPROCESSING):
        return False
    get_head = getattr(inner, "get_output_embeddings", None)
    if not (callable(get_head) and isinstance(head := get_head(), torch.nn.Module)):
        return False
    # DeepSpeed ZeRO-3 partitions parameters (they carry ``ds_id``) and gathers them only inside the module's own
    # forward, so the head's weight cannot be used directly here: take the full logits instead.
    if any(hasattr(p, "ds_id") for p in head.parameters()):
        return False
    # FSDP reduces (and frees) a trainable weight's gradient in hooks around its module's forward; a gradient that
    # reaches the weight directly arrives after that (a crash on CPU). A frozen head (LoRA) is only read: fine.
    return not (any(p.requires_grad for p in head.parameters()) and _fsdp_sharded(inner))


def _fsdp_sharded(model: Any) -> bool:
    """Whether FSDP2 wraps the model (accelerate shards the root too, changing its class in place)."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # a torch build without distributed support
        return False
    return isinstance(model, FSDPModule)


@contextlib.contextmanager
def capture_final_hidden(model: Any, length: int) -> Iterator[dict[str, torch.Tensor]]:
    """While active, the output head receives an empty sequence and its input (hidden states) is captured.

    Only when the hidden states have ``length`` positions (the labels' length); otherwise (virtual tokens
    prepended) the head runs normally and nothing is captured, so callers fall back to the logits.
    """
    captured: dict[str, torch.Tensor] = {}

    def pre_hook(_module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        hidden = args[0]
        if hidden.dim() != 3 or hidden.size(1) != length:
            return None
        captured["hidden"] = hidden
        return (hidden[:, :0], *args[1:])

    head = unwrap(model).get_output_embeddings()
    handle = head.register_forward_pre_hook(pre_hook)
    try:
        yield captured
    finally:
        handle.remove()


def causal_lm_loss(
    model: Any, inputs: dict[str, torch.Tensor], labels: torch.Tensor, label_smoothing: float = 0.0
) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over positions whose (shifted) label is not IGNORE_INDEX, and their count.

    ``inputs`` are the keyword arguments of ``model(...)``; ``labels`` align with ``inputs["input_ids"]``.
    """
    targets = labels[:, 1:]
    count = int((targets != IGNORE_INDEX).sum())
    if fast_path_possible(model, label_smoothing):
        with capture_final_hidden(model, labels.size(1)) as captured:
            output = model(**inputs)
        if "hidden" in captured:
            hidden = captured["hidden"][:, :-1]
            keep = targets != IGNORE_INDEX
            head = unwrap(model).get_output_embeddings()
            return linear_cross_entropy(hidden[keep], head, targets[keep]), count
    else:
        output = model(**inputs)
    return full_logits_loss(output.logits, labels, label_smoothing), count


def full_logits_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """The reference computation: every position's logits, then the summed cross-entropy over targets."""
    logits = logits[:, -labels.size(1) :]  # prompt tuning prepends logits of its virtual tokens
    return F.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.size(-1)),
        labels[:, 1:].reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
        label_smoothing=label_smoothing,
    )


def linear_cross_entropy(hidden: torch.Tensor, head: torch.nn.Module, targets: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of ``head(hidden)`` against ``targets`` (hidden: (N, H), targets: (N,)), chunked.

    A plain ``nn.Linear`` head takes the fused path (gradients computed per chunk in the forward pass: the
    logits of one chunk at a time exist). Any other head module (e.g. a LoRA-wrapped head) is called as a
    module on checkpointed chunks, recomputed in backward.
    """
    if hidden.size(0) == 0:
        return hidden.sum() * 0.0
    vocab = head.out_features if hasattr(head, "out_features") else head.weight.size(0)
    chunk = max(1, CHUNK_ELEMENTS // vocab)
    if type(head) is torch.nn.Linear and torch.is_grad_enabled():
        fused = _liger_loss(hidden, head, targets)
        if fused is not None:
            return fused
        return _FusedLinearCrossEntropy.apply(hidden, head.weight, head.bias, targets, chunk)
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.size(0), chunk):
        part = slice(start, start + chunk)
        if torch.is_grad_enabled():
            total = total + torch.utils.checkpoint.checkpoint(
                _module_chunk_loss, head, hidden[part], targets[part], use_reentrant=False
            )
        else:
            total = total + _module_chunk_loss(head, hidden[part], targets[part])
    return total


def _module_chunk_loss(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(hidden).float(), targets, reduction="sum")


def _liger_loss(hidden: torch.Tensor, head: torch.nn.Linear, targets: torch.Tensor) -> torch.Tensor | None:
    """liger-kernel's Triton fused linear cross-entropy on CUDA, when installed; None elsewhere."""
    if not hidden.is_cuda:
        return None
    try:
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy
    except ImportError:
        return None
    weight = head.weight if head.weight.dtype == hidden.dtype else head.weight.to(hidden.dtype)
    bias = None if head.bias is None else head.bias.to(hidden.dtype)
    return liger_fused_linear_cross_entropy(
        hidden.contiguous(), weight, targets, bias=bias, ignore_index=IGNORE_INDEX, reduction="sum"
    )


class _FusedLinearCrossEntropy(torch.autograd.Function):
    """sum_i CE(hidden_i @ W^T + b, target_i), gradients computed chunk by chunk in forward (not saved logits).

    The gradient of the summed cross-entropy w.r.t. a row's logits is softmax - one_hot; from it the gradients
    of the hidden states, the weight and the bias follow by matrix products. Only what needs a gradient is
    computed (a frozen head, as with LoRA, costs no weight gradient).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
        chunk: int,
    ) -> torch.Tensor:
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[2]
        w = weight.to(hidden.dtype)
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.size(0), chunk):
            h, t = hidden[start : start + chunk], targets[start : start + chunk]
            logits = F.linear(h, w, None if bias is None else bias.to(h.dtype)).float()
            lse = torch.logsumexp(logits, dim=-1)
            total += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
            if not (need_h or need_w or need_b):
                continue
            grad = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
            grad[torch.arange(t.size(0), device=t.device), t] -= 1.0
            if grad_b is not None:
                grad_b += grad.sum(0)
            grad = grad.to(h.dtype)
            if grad_h is not None:
                grad_h[start : start + chunk] = grad @ w
            if grad_w is not None:
                grad_w += (grad.t() @ h).float()
        ctx.save_for_backward(
            *(g if g is not None else torch.empty(0) for g in (grad_h, grad_w, grad_b)),
        )
        ctx.present = (grad_h is not None, grad_w is not None, grad_b is not None)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        return total

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        saved = ctx.saved_tensors
        grad_h, grad_w, grad_b = (s if present else None for s, present in zip(saved, ctx.present, strict=True))
        scale = grad_output.float()
        out_h = grad_h * scale.to(grad_h.dtype) if grad_h is not None else None
        out_w = (grad_w * scale).to(ctx.dtypes[0]) if grad_w is not None else None
        out_b = (grad_b * scale).to(ctx.dtypes[1]) if grad_b is not None else None
        return out_h, out_w, out_b, None, None
