"""Training options that change the model for training: dropout, torch.compile, liger kernels, attention, gradient
checkpointing, NEFTune noise, no key/value cache, and returning freed CPU memory to the system."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import math
import sys
from collections.abc import Iterator
from typing import Any

import torch

from tunesmith.core.config import TrainingConfig
from tunesmith.engine.lm_loss import unwrap
from tunesmith.engine.task import TrainingError


def prepare_model(model: Any, cfg: TrainingConfig) -> None:
    """Options that change the model before training: dropout override, liger kernels, torch.compile."""
    choose_attention(model, cfg.attention, cfg.packing)
    if cfg.dropout is not None:
        override_dropout(model, cfg.dropout)
    try:
        apply_liger(model, cfg.liger)
    except RuntimeError as error:
        raise TrainingError(str(error)) from None
    if cfg.compile:
        compile_layers(model)


def enable_gradient_checkpointing(model: Any) -> None:
    """Recompute activations in backward (non-reentrant: works with frozen embeddings and LoRA, keeps RNG)."""
    options = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 (the old name is deprecated there)
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
    elif hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)
    else:
        raise TrainingError("training.gradient_checkpointing: this model does not support gradient checkpointing")
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "use_cache"):
        config.use_cache = False


@contextlib.contextmanager
def neftune(model: Any, alpha: float | None) -> Iterator[None]:
    """NEFTune (Jain et al., 2023): noise on the input embeddings in training mode only, removed afterwards.

    Scale alpha / sqrt(L * d) with L the row length, as in the paper and transformers' Trainer (for packed rows,
    L is the row's length, not each example's).
    """
    if not alpha:
        yield
        return
    embeddings = getattr(model, "module", model).get_input_embeddings()

    def add_noise(module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        if not module.training:
            return output
        scale = alpha / math.sqrt(output.size(1) * output.size(2))
        return output + torch.empty_like(output).uniform_(-scale, scale)

    handle = embeddings.register_forward_hook(add_noise)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def no_kv_cache(model: Any) -> Iterator[None]:
    """No key/value cache while training: transformers builds one in every forward when ``config.use_cache`` is
    on (the default), which training never reads (and which makes a compiled decoder layer recompile)."""
    config = getattr(model, "config", None)
    before = getattr(config, "use_cache", None)
    if before:
        config.use_cache = False
    try:
        yield
    finally:
        if before:
            config.use_cache = before


def override_dropout(model: Any, p: float) -> int:
    """Set every dropout probability of the base model to ``p``; return how many places were changed.

    Covers ``nn.Dropout`` modules, the float ``attention_dropout``/``dropout`` attributes attention modules read
    at forward time (Llama-style models have no Dropout module for attention) and the config's ``*dropout*``
    fields (so the saved config says what was trained). Adapter dropout (``lora_dropout``) is the method's
    setting (``method.lora.dropout``) and is left alone.
    """
    changed = 0
    for name, module in unwrap(model).named_modules():
        if "lora_dropout" in name:
            continue
        if isinstance(module, torch.nn.Dropout):
            module.p = p
            changed += 1
        for attribute in ("attention_dropout", "dropout"):
            if isinstance(getattr(module, attribute, None), float):
                setattr(module, attribute, p)
                changed += 1
    config = getattr(unwrap(model), "config", None)
    if config is not None:
        for key, value in list(vars(config).items()):
            if "dropout" in key and isinstance(value, float):
                setattr(config, key, p)
    return changed


def decoder_layers(model: Any) -> list[torch.nn.Module]:
    """The repeated blocks of a transformers model (its ``_no_split_modules`` classes), in order."""
    inner = unwrap(model)
    block_names = set(getattr(_transformers_model(inner), "_no_split_modules", None) or [])
    return [module for module in inner.modules() if type(module).__name__ in block_names]


@contextlib.contextmanager
def release_freed_cpu_memory(model: Any, enabled: bool = True) -> Iterator[int]:
    """While active, return the C heap's freed memory to the system after each decoder layer's forward (CPU, glibc).

    A CPU forward pass frees many activation-sized temporaries while it stores the activations for backward.
    glibc keeps freed heap chunks resident, and whether later allocations reuse them varies from run to run: the
    same SmolLM2-135M LoRA micro-batch peaked at 9.9 GiB RSS in some runs and 13.6-13.8 GiB in others (9.6 GiB
    of it live). ``malloc_trim(0)`` after each layer's forward keeps the peak at what is live (10.6 GiB measured)
    at no measurable cost there; trimming in backward as well cost ~50% more time, so forward only. With one
    short row per forward the trims are many and the peak small (2.4 GiB with, 3.4 GiB without), and they cost
    ~20% of the run's time: callers then pass ``enabled=False``. Yields the number of hooks (0 when disabled, on
    GPU models, non-glibc systems and models without recognised layers).
    """
    trim = _malloc_trim() if enabled else None
    on_cpu = all(p.device.type == "cpu" for p in unwrap(model).parameters())
    layers = decoder_layers(model) if trim is not None and on_cpu else []

    def release(*_args: Any) -> None:
        trim(0)

    handles = [layer.register_forward_hook(release) for layer in layers]
    try:
        yield len(handles)
    finally:
        for handle in handles:
            handle.remove()


def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None where the C library has none (macOS, musl, Windows)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def compile_layers(model: Any) -> int:
    """torch.compile each decoder layer in place (regional compilation); return how many were compiled.

    Compiling the repeated block rather than the whole model compiles once for all layers, keeps parameter
    names (checkpoints and adapters are unchanged) and leaves the loss's output-head hook outside compiled code.
    """
    inner = unwrap(model)
    compiled = 0
    for module in decoder_layers(inner):
        if getattr(module, "_compiled_call_impl", None) is None:  # once: a second compile would recompile
            module.compile()
        compiled += 1
    if not compiled:
        print("training.compile: no decoder layers found; compiling the whole model", file=sys.stderr)
        inner.compile()
    return compiled


def apply_liger(model: Any, wanted: bool | None) -> bool:
    """Swap in liger-kernel's RMSNorm, RoPE and SwiGLU kernels on CUDA; return whether they are in use.

    ``wanted`` None: when liger-kernel is installed and the model is on CUDA. The fused linear cross-entropy is
    used by ``lm_loss`` directly, so the model's own loss path is not patched.
    """
    if wanted is False:
        return False
    base = _transformers_model(unwrap(model))
    on_cuda = any(p.is_cuda for p in base.parameters())
    try:
        from liger_kernel.transformers import _apply_liger_kernel_to_instance
    except ImportError:
        if wanted:
            raise RuntimeError("training.liger: liger-kernel is not installed (pip install liger-kernel)") from None
        return False
    if not on_cuda:
        if wanted:
            raise RuntimeError("training.liger: liger kernels need the model on a CUDA GPU")
        return False
    _apply_liger_kernel_to_instance(
        model=base, rope=True, rms_norm=True, swiglu=True, cross_entropy=False, fused_linear_cross_entropy=False
    )
    return True


def choose_attention(model: Any, wanted: str, packing: bool) -> str:
    """Switch the model's attention implementation for training; return the one in use.

    ``auto``: FlexAttention on CUDA when packing (document masks skip other examples' blocks), else unchanged.
    """
    base = _transformers_model(unwrap(model))
    config = getattr(base, "config", None)
    if config is None or not hasattr(base, "set_attn_implementation"):  # not a transformers model: leave it
        return wanted
    current = str(getattr(config, "_attn_implementation", None) or "eager")
    if wanted == "auto":
        on_cuda = any(p.is_cuda for p in base.parameters())
        wanted = "flex_attention" if on_cuda and packing and _has_flex() else current
    if wanted != current:
        base.set_attn_implementation(wanted)
    return wanted


def _has_flex() -> bool:
    try:
        from torch.nn.attention.flex_attention import create_block_mask  # noqa: F401
    except ImportError:
        return False
    return True


def _transformers_model(model: Any) -> Any:
    """The transformers model inside a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model
