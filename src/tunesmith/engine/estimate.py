"""Predict peak memory and time per epoch of a training run before it starts (``tunesmith estimate CONFIG``).

Memory = weights + gradients + optimizer state (by method: only trainable parameters have the last two)
+ stored activations of the largest micro-batch the first epoch meets (packed or padded exactly as the engine
will) + the loss's logits + a runtime allowance. Time = a FLOPs count of every micro-batch of the epoch
(matrix products, attention over the rows the engine will build, the output head on targets only) divided by
the throughput of a short matrix-product probe on this device times an efficiency measured once per device
kind against real training (``bench/train_speed.py`` on CPU, ``bench/gpu_speed.py`` on an H100; see
docs/benchmarks.md). The parameter counts are exact (the model is built on the meta device, no weights load).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from tunesmith.core.config import MethodConfig, TrainingConfig
from tunesmith.engine.batching import step_micro_batches, steps_per_epoch
from tunesmith.engine.packing import plan_rows
from tunesmith.engine.precision import choose_precision

GIB = 2**30
# Achieved training FLOP/s as a fraction of the matmul probe's, measured (docs/benchmarks.md).
EFFICIENCY = {"cpu": 0.55, "cuda": 0.35}
# Stored activations per token and decoder layer, in units of the hidden size / intermediate size (values
# saved for backward by a Llama-style block: norms, q/k/v, attention output, residuals; gate, up, act, product).
ACT_HIDDEN, ACT_INTERMEDIATE = 12, 4
RUNTIME_BYTES = {"cpu": 0.8 * GIB, "cuda": 0.6 * GIB}
# Fixed cost per decoder layer and micro-batch (kernel launches, Python): what makes small GPU batches slow.
LAYER_OVERHEAD_S = {"cpu": 0.0, "cuda": 0.0025}


@dataclass
class Shape:
    hidden: int
    layers: int
    intermediate: int
    vocab: int
    heads: int
    kv_dim: int

    @classmethod
    def of(cls, config: Any) -> Shape:
        hidden = _first(config, "hidden_size", "n_embd", "d_model")
        heads = _first(config, "num_attention_heads", "n_head")
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        return cls(
            hidden=hidden,
            layers=_first(config, "num_hidden_layers", "n_layer"),
            intermediate=getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * hidden,
            vocab=config.vocab_size,
            heads=heads,
            kv_dim=hidden // heads * kv_heads,
        )


@dataclass
class Estimate:
    device: str
    parameters: int
    trainable: int
    memory_gib: dict[str, float]
    peak_gib: float
    steps_per_epoch: int
    tokens_per_epoch: int
    largest_micro_batch_positions: int
    probe_tflops: float
    seconds_per_step: float
    seconds_per_epoch: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def count_parameters(model_config: Any, method: MethodConfig, tokenizer_path: str | None = None) -> tuple[int, int]:
    """(total, trainable) parameters of the model with the method applied, built on the meta device."""
    from transformers import AutoModelForCausalLM

    from tunesmith.models.adapt import apply_method

    if method.name == "qlora":  # same adapters as lora; 4-bit loading needs a GPU, counting does not
        method = method.model_copy(update={"name": "lora"})
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config)
        model = apply_method(model, method, tokenizer_path=tokenizer_path)
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def micro_batch_shapes(
    lengths: list[int], targets: list[int], cfg: TrainingConfig, packing: bool, one_row: bool, row_wise: bool = False
) -> list[tuple[list[int], list[int], int]]:
    """(row widths, example lengths, targets) of every micro-batch of the first epoch, as the engine builds them.

    ``row_wise``: each packed row is its own micro-batch, cut to its tokens (the engine on a CPU).
    """
    per_step = cfg.batch_size * cfg.grad_accum
    shapes = []
    for step in range(steps_per_epoch(len(lengths), per_step)):
        for idx in step_micro_batches(len(lengths), step, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
                                      seed=cfg.seed):  # fmt: skip
            if not idx:
                continue
            sizes = [lengths[i] for i in idx]
            if packing and row_wise:
                for row in plan_rows(sizes, cfg.max_seq_len):
                    row_sizes = [sizes[i] for i in row]
                    shapes.append(([sum(row_sizes)], row_sizes, sum(targets[idx[i]] for i in row)))
                continue
            if packing and one_row:
                rows = [-(-sum(sizes) // 128) * 128]
            elif packing:
                plan = plan_rows(sizes, cfg.max_seq_len)
                width = max(sum(sizes[i] for i in row) for row in plan)
                rows = [width] * len(plan)
            else:
                rows = [max(sizes)] * len(sizes)
            shapes.append((rows, sizes, sum(targets[i] for i in idx)))
    return shapes


def probe_flops(device: str, shape: Shape, seconds: float = 0.5, dtype: torch.dtype | None = None) -> float:
    """Matrix-product FLOP/s on this device, at the shape of a decoder layer's MLP (default: fp32 CPU, bf16 GPU)."""
    dtype = dtype or (torch.float32 if device == "cpu" else torch.bfloat16)
    rows = 512 if device == "cpu" else 8192
    a = torch.randn(rows, shape.hidden, dtype=dtype, device=device)
    b = torch.randn(shape.hidden, shape.intermediate, dtype=dtype, device=device)
    a @ b  # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        if device != "cpu":
            torch.cuda.synchronize()
        done += 1
    return done * 2 * rows * shape.hidden * shape.intermediate / (time.perf_counter() - started)


def estimate(
    model_config: Any,
    method: MethodConfig,
    cfg: TrainingConfig,
    lengths: list[int],
    targets: list[int],
    *,
    device: str | None = None,
    packing: bool = True,
    tokenizer_path: str | None = None,
    throughput: float | None = None,
    weight_bytes: int = 4,
) -> Estimate:
    """Peak memory and time per epoch for training this model with this method on examples of these lengths."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    shape = Shape.of(model_config)
    total, trainable = count_parameters(model_config, method, tokenizer_path)
    attn = cfg.attention if cfg.attention != "auto" else ("flex_attention" if device == "cuda" else "sdpa")
    one_row = packing and attn == "flex_attention"
    micro = cfg.micro_batch_size if isinstance(cfg.micro_batch_size, int) else None
    if micro and micro < cfg.batch_size:
        cfg = cfg.model_copy(update={"batch_size": micro, "grad_accum": cfg.grad_accum * -(-cfg.batch_size // micro)})
    row_wise = device == "cpu" and cfg.micro_batch_size is None  # as the engine does (loop.py)
    shapes = micro_batch_shapes(lengths, targets, cfg, packing, one_row, row_wise)
    # bf16 on a CPU only where the processor has it (precision auto), as training will (engine/precision.py)
    computes = choose_precision(cfg.precision).name if device == "cpu" else cfg.precision
    act = 4 if computes == "fp32" else 2
    quantized = method.name == "qlora"
    full = method.name == "full"
    fast_logits = not cfg.label_smoothing and method.name != "prompt"

    # tunesmith loads weights in fp32 (autocast computes in bf16); nf4 (qlora): ~0.55 byte per linear weight
    weights = total * weight_bytes - (_linear_params(shape) * (weight_bytes - 0.55) if quantized else 0)
    grads, optimizer = trainable * weight_bytes, trainable * 2 * weight_bytes
    positions = max(sum(rows) for rows, _, _ in shapes)
    per_token_layer = (ACT_HIDDEN * shape.hidden + ACT_INTERMEDIATE * shape.intermediate) * act
    if method.name in ("lora", "qlora") and method.lora.dropout > 0:  # a dropped-out copy of each adapter input
        per_token_layer += (6 * shape.hidden + shape.intermediate) * (act + 1)
    if cfg.gradient_checkpointing:
        activations = positions * (shape.layers * shape.hidden * act + per_token_layer)
    else:
        activations = positions * shape.layers * per_token_layer
    if attn == "eager":
        activations += shape.layers * shape.heads * act * max(sum(w * w for w in rows) for rows, _, _ in shapes)
    if fast_logits:
        most = max(t for _, _, t in shapes)  # one chunk of fp32 logits at a time (and its softmax, gradient)
        logits = 3 * 4 * min(1 << 23, most * shape.vocab) + most * shape.hidden * act * 2
    else:
        logits = positions * shape.vocab * (act + 8)
    runtime = RUNTIME_BYTES["cpu" if device == "cpu" else "cuda"]
    memory = {
        "weights": weights,
        "gradients": grads,
        "optimizer": optimizer,
        "activations": activations,
        "logits": logits,
        "runtime": runtime,
    }

    probe_dtype = torch.bfloat16 if device == "cpu" and computes == "bf16" else None
    throughput = throughput or probe_flops(device, shape, dtype=probe_dtype)
    matmul = _linear_params(shape)
    backward = 1.0 + (1.0 if full else trainable / max(total, 1)) + (1.0 if cfg.gradient_checkpointing else 0.0)
    flops = 0.0
    for rows, sizes, n_targets in shapes:
        dense = sum(rows)
        attention = (
            sum(s * s for s in sizes) * 2 * shape.hidden if one_row else sum(w * w for w in rows) * 4 * shape.hidden
        )
        head = 2 * shape.hidden * shape.vocab * (n_targets if fast_logits else dense)
        flops += (2 * matmul * dense + shape.layers * attention + head) * (1 + backward)
    kind = "cpu" if device == "cpu" else "cuda"
    seconds = flops / (throughput * EFFICIENCY[kind]) + len(shapes) * shape.layers * LAYER_OVERHEAD_S[kind]
    n_steps = steps_per_epoch(len(lengths), cfg.batch_size * cfg.grad_accum)
    return Estimate(
        device=device,
        parameters=total,
        trainable=trainable,
        memory_gib={k: round(v / GIB, 3) for k, v in memory.items()},
        peak_gib=round(sum(memory.values()) / GIB, 2),
        steps_per_epoch=n_steps,
        tokens_per_epoch=sum(lengths),
        largest_micro_batch_positions=positions,
        probe_tflops=round(throughput / 1e12, 3),
        seconds_per_step=round(seconds / n_steps, 3),
        seconds_per_epoch=float(f"{seconds:.3g}"),  # 3 significant digits: tiny runs take well under 0.1 s
    )


def _linear_params(shape: Shape) -> int:
    """Weights of the decoder layers' matrix products (attention and MLP), which every token goes through."""
    attention = 2 * shape.hidden * shape.hidden + 2 * shape.hidden * shape.kv_dim
    return shape.layers * (attention + 3 * shape.hidden * shape.intermediate)


def _first(config: Any, *names: str) -> int:
    for name in names:
        value = getattr(config, name, None)
        if value:
            return int(value)
    raise ValueError(f"the model config has none of {names}; cannot estimate this architecture")
