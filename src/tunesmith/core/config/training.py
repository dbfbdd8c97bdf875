"""The ``training`` section: the optimisation loop's settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tunesmith.core.config.base import Section


class TrainingConfig(Section):
    epochs: float = Field(1.0, gt=0, description="Passes over the training data (fractions allowed).")
    max_steps: int | None = Field(None, gt=0, description="Stop after this many optimizer steps (overrides epochs).")
    batch_size: int = Field(8, gt=0, description="Examples per micro-batch, per process.")
    grad_accum: int = Field(1, gt=0, description="Micro-batches per optimizer step.")
    learning_rate: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0, description="Fraction of steps spent warming up the LR.")
    scheduler: Literal["linear", "cosine", "constant", "warmup-stable-decay", "reduce_on_plateau"] = Field(
        "cosine",
        description="LR schedule after warm-up; warmup-stable-decay holds the peak, then decays (cosine); "
        "reduce_on_plateau multiplies the LR by plateau_factor when the validation loss stops improving "
        "(needs eval_every).",
    )
    plateau_factor: float = Field(0.5, gt=0.0, lt=1.0, description="reduce_on_plateau: LR multiplier on a plateau.")
    plateau_patience: int = Field(
        0, ge=0, description="reduce_on_plateau: evaluations without improvement tolerated before the LR drops."
    )
    decay_ratio: float = Field(
        0.1, gt=0.0, le=1.0, description="warmup-stable-decay: fraction of steps spent decaying at the end."
    )
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="Label smoothing of the cross-entropy loss.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: less memory, about 30% more time."
    )
    neftune_alpha: float | None = Field(
        None,
        gt=0,
        description="NEFTune: uniform noise of scale alpha / sqrt(row length x hidden size) on the input "
        "embeddings while training (5 is the paper's usual value); null disables.",
    )
    early_stopping_patience: int | None = Field(
        None,
        gt=0,
        description="Stop when the validation loss has not improved for N evaluations (needs eval_every); "
        "the best weights are kept and restored at the end.",
    )
    max_grad_norm: float | None = Field(1.0, gt=0, description="Clip gradients to this norm; null disables.")
    max_seq_len: int = Field(
        512, gt=0, description="Longer examples are truncated (and counted); also the length of a packed row."
    )
    packing: bool = Field(
        True,
        description="Pack each micro-batch's examples into rows of up to max_seq_len tokens, isolated by a "
        "block-diagonal attention mask (no padding compute); false pads each example to the batch's longest.",
    )
    eval_every: int | None = Field(None, gt=0, description="Validation loss every N optimizer steps.")
    log_every: int = Field(1, gt=0, description="Write metrics.jsonl every N optimizer steps.")
    save_every: int | None = Field(
        None, gt=0, description="Save a checkpoint (weights, optimizer, scheduler, RNG, step) every N steps."
    )
    keep_checkpoints: int = Field(2, gt=0, description="Keep only the newest K checkpoints.")
    max_bad_steps: int = Field(
        10, ge=0, description="Steps with a non-finite loss or gradient are skipped; stop after more than this many."
    )
    seed: int = Field(42)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 autocast on GPUs that support it, fp32 on CPU."
    )
    micro_batch_size: int | Literal["auto"] | None = Field(
        None,
        description="Run each micro-batch in pieces of at most this many examples: less memory, the same result "
        "(the loss is normalised over the whole step). auto: the largest piece that fits in GPU memory, found by "
        "trying the step's longest examples. null: batch_size on a GPU; on a CPU, one packed row at a time (no "
        "padding compute and a fraction of the memory; CPUs gain nothing from batching rows).",
    )
    dropout: float | None = Field(
        None, ge=0.0, lt=1.0, description="Override the model's dropout probabilities (attention, hidden, ...)."
    )
    compile: bool = Field(
        False, description="torch.compile each decoder layer: faster steps on GPUs after a warm-up (minutes)."
    )
    attention: Literal["auto", "sdpa", "eager", "flex_attention"] = Field(
        "auto",
        description="Attention implementation while training. auto: flex_attention on CUDA GPUs when packing "
        "(each example attends only to itself, skipped blocks cost nothing), else the model's (sdpa).",
    )
    liger: bool | None = Field(
        None,
        description="liger-kernel Triton kernels (RMSNorm, RoPE, SwiGLU, fused linear cross-entropy) on CUDA GPUs; "
        "null: use them when installed and on CUDA.",
    )
    trackers: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(
        ["tensorboard"],
        description="Experiment trackers fed through accelerate (logs under the run directory; mlflow and wandb "
        "must be installed and configured); [] for none.",
    )
