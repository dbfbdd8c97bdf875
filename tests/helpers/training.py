"""Encoded SST-2 examples, one step's gradients, parameter storage, and a tiny trained run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tests.helpers.configs import write_tiny_config
from tests.helpers.paths import SST2

if TYPE_CHECKING:
    import torch


def sst2_examples(tokenizer, n: int) -> list:
    from tunesmith.data.records import Chat, Message
    from tunesmith.recipes import sft

    lines = (SST2 / "train.tsv").read_text(encoding="utf-8").splitlines()[1 : n + 1]
    chats = [
        Chat(
            [Message("user", f"Sentiment of: {text}"), Message("assistant", "positive" if label == "1" else "negative")]
        )
        for text, label in (line.split("\t") for line in lines)
    ]
    return [sft.encode(chat, tokenizer, "assistant", 128) for chat in chats]


def gradients(
    model_dir: Path,
    method: str,
    split: list[int],
    examples: list,
    pack_len: int | None = None,
    checkpointing: bool = False,
) -> tuple[dict[str, torch.Tensor], float]:
    """Gradients and loss of one optimizer step over ``examples`` split into micro-batches of the given sizes."""
    import torch
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.core.config import MethodConfig
    from tunesmith.engine import backward_window, enable_gradient_checkpointing
    from tunesmith.models.adapt import apply_method
    from tunesmith.recipes import sft

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model = apply_method(model, MethodConfig(name=method))
    if method == "lora":  # LoRA B starts at zero; give it values so every adapter weight has a gradient
        for name, p in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.02)
    if checkpointing:
        enable_gradient_checkpointing(model)
    model.train()
    for module in model.modules():  # dropout off: the comparison is about arithmetic, not noise
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    fns = sft.task_fns(AutoTokenizer.from_pretrained(model_dir), pack_len)
    batches, start = [], 0
    for size in split:
        batches.append(fns.collate(examples[start : start + size]))
        start += size
    trainable = [p for p in model.parameters() if p.requires_grad]
    loss, _, _ = backward_window(model, batches, fns, Accelerator(cpu=True), trainable)
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}, loss


def unique_storage_numel(model: torch.nn.Module) -> int:
    """Elements of distinct parameter storages held by the model (shared weights counted once)."""
    seen: dict[int, int] = {}
    for p in model.parameters():
        seen[p.untyped_storage().data_ptr()] = p.untyped_storage().nbytes() // p.element_size()
    return sum(seen.values())


def train_tiny_run(folder: Path, model_dir: Path, name: str, steps: int, seed: int = 42, evaluate: bool = True) -> Path:
    """Train a LoRA run on SST-2 with the tiny model; return its run directory."""
    from tunesmith.pipeline.run import Run

    config = write_tiny_config(
        folder,
        model_dir,
        data={"train_rows": 256},
        training={"max_steps": steps, "batch_size": 8, "learning_rate": 1e-2, "scheduler": "constant", "seed": seed},
        eval={"enabled": evaluate, "max_new_tokens": 8},
        output={"dir": str(folder / "runs"), "name": name},
    )
    run = Run.from_file(config)
    run.run()
    return run.dir.root
