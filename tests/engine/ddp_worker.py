"""Run by tests/engine/test_ddp.py, alone or under `accelerate launch --num_processes 2`: one step's gradients, then a
short training, with the same 8 examples per optimizer step whatever the process count. Rank 0 saves the results.

usage: ddp_worker.py MODEL_DIR OUT_FILE
"""

from __future__ import annotations

import sys

import torch
from accelerate import Accelerator
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.helpers.training import sst2_examples
from tunesmith.core.config import LoraConfig, MethodConfig, TrainingConfig
from tunesmith.engine import backward_window, train
from tunesmith.engine.batching import step_micro_batches
from tunesmith.models.adapt import apply_method
from tunesmith.recipes import sft

EXAMPLES_PER_STEP = 8


def fresh_model(model_dir: str) -> torch.nn.Module:
    torch.manual_seed(0)
    method = MethodConfig(name="lora", lora=LoraConfig(dropout=0.0))  # no dropout: ranks draw different noise
    model = apply_method(AutoModelForCausalLM.from_pretrained(model_dir), method)
    for name, p in model.named_parameters():  # LoRA B starts at zero; give every adapter weight a gradient
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    return model


def main(model_dir: str, out: str) -> None:
    accelerator = Accelerator(cpu=True)
    world, rank = accelerator.num_processes, accelerator.process_index
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    examples = sst2_examples(tokenizer, 24)
    fns = sft.task_fns(tokenizer, 64)
    # 8 examples per step: 8 x 1 on one process, 2 x 2 on each of two.
    batch, accum = (8, 1) if world == 1 else (2, EXAMPLES_PER_STEP // (2 * world))
    cfg = TrainingConfig(max_steps=3, batch_size=batch, grad_accum=accum, learning_rate=1e-3, seed=3)

    model = accelerator.prepare(fresh_model(model_dir))
    trainable = [p for p in model.parameters() if p.requires_grad]
    indices = step_micro_batches(
        len(examples), 0, batch_size=batch, grad_accum=accum, seed=cfg.seed, world_size=world, rank=rank
    )
    batches = [fns.collate([examples[i] for i in idx]) for idx in indices]
    loss, targets, _ = backward_window(model, batches, fns, accelerator, trainable)
    inner = accelerator.unwrap_model(model)
    grads = {n: p.grad.detach().clone() for n, p in inner.named_parameters() if p.requires_grad}

    model = fresh_model(model_dir)
    summary = train(model, examples, fns, cfg, accelerator=accelerator)
    weights = {n: p.detach().clone() for n, p in accelerator.unwrap_model(model).named_parameters() if p.requires_grad}
    if accelerator.is_main_process:
        torch.save(
            {
                "world": world,
                "loss": loss,
                "targets": targets,
                "grads": grads,
                "weights": weights,
                "final": summary.train_loss,
            },
            out,
        )
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
