"""CPU training speed: tunesmith's engine against a plain Hugging Face Trainer + peft baseline.

Same model (smollm2-135m), LoRA r=16 on all linear layers, same OASST conversations encoded the same way
(assistant-only labels, truncated to --max-len), same examples per step and the same number of steps. Each
side runs in its own process so peak RSS is its own. Reports useful (non-padding) tokens/s and peak RSS, and
their ratios, and both against the machine itself: its fp32 and bf16 matmul rates are measured first, and each
side's achieved FLOP/s is given as a fraction of them (useful FLOPs: 4 x the model's linear weights per trained
token, i.e. forward plus the backward to the inputs of frozen weights; the same count for both sides).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/train_speed.py --steps 4
    HF_HUB_OFFLINE=1 .venv/bin/python bench/train_speed.py --steps 4 --hf-bf16   # Trainer with bf16=True
    HF_HUB_OFFLINE=1 .venv/bin/python bench/train_speed.py --steps 4 --precision fp32   # tunesmith without auto
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "datasets" / "oasst_en_100" / "conversations_messages.jsonl"


def load_examples(tokenizer: object, max_len: int, n: int) -> list:
    from tunesmith.data.records import Chat, Message
    from tunesmith.data.render import encode_chat

    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    chats = [Chat([Message(m["role"], m["content"]) for m in row["messages"]]) for row in rows[:n]]
    return [e for e in (encode_chat(c, tokenizer, "assistant", max_len) for c in chats) if e.n_targets > 0]


def model_and_tokenizer() -> tuple[object, object]:
    import torch

    from tunesmith.core.config import MethodConfig, ModelConfig
    from tunesmith.models.adapt import apply_method
    from tunesmith.models.load import load_causal_lm, load_tokenizer

    model_cfg = ModelConfig(name="smollm2-135m")
    tokenizer = load_tokenizer(model_cfg)
    torch.manual_seed(0)
    model = apply_method(load_causal_lm(model_cfg), MethodConfig(name="lora"))
    return model, tokenizer


def matmul_rates(size: int = 2048, seconds: float = 2.0) -> dict[str, float]:
    """This machine's fp32 and bf16 matmul GFLOP/s (square matrices, torch's default threads)."""
    import torch

    rates = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        a @ b  # warm-up
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            a @ b
            done += 1
        rates[name] = done * 2 * size**3 / (time.perf_counter() - started) / 1e9
    return rates


def linear_weights() -> int:
    """The model's linear-layer weights (no embeddings): 4 x this is the useful FLOPs per trained token."""
    from transformers import AutoConfig

    from tunesmith.models.resolve import resolve_model

    c = AutoConfig.from_pretrained(resolve_model("smollm2-135m").location)
    kv = c.hidden_size // c.num_attention_heads * c.num_key_value_heads
    per_layer = c.hidden_size * (2 * c.hidden_size + 2 * kv) + 3 * c.hidden_size * c.intermediate_size
    return c.num_hidden_layers * per_layer


def run_tunesmith(args: argparse.Namespace) -> dict:
    from tunesmith.core.config import TrainingConfig
    from tunesmith.engine import make_accelerator
    from tunesmith.engine.loop import train
    from tunesmith.engine.precision import choose_precision
    from tunesmith.recipes import sft

    model, tokenizer = model_and_tokenizer()
    examples = load_examples(tokenizer, args.max_len, args.examples)
    cfg = TrainingConfig(
        max_steps=args.steps,
        batch_size=args.batch,
        learning_rate=2e-4,
        max_seq_len=args.max_len,
        scheduler="constant",
        seed=42,
        packing=not args.no_packing,
        micro_batch_size=args.micro_batch,
        precision=args.precision,
    )
    fns = sft.task_fns(tokenizer, pack_len=None if args.no_packing else args.max_len)
    started = time.perf_counter()
    summary = train(model, examples, fns, cfg, accelerator=make_accelerator(cfg.precision))
    seconds = time.perf_counter() - started
    precision = choose_precision(cfg.precision)
    return {"useful_tokens": summary.tokens, "seconds": seconds, "precision": precision.name, "why": precision.reason}


def run_hf(args: argparse.Namespace) -> dict:
    import torch
    from transformers import Trainer, TrainingArguments

    model, tokenizer = model_and_tokenizer()
    examples = load_examples(tokenizer, args.max_len, args.examples)
    dataset = [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]

    def collate(rows: list[dict]) -> dict:
        """Right-pad to the longest in the batch (what DataCollatorForSeq2Seq does)."""
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), tokenizer.pad_token_id)
        labels = torch.full((len(rows), width), -100)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r["input_ids"])] = torch.tensor(r["input_ids"])
            labels[i, : len(r["labels"])] = torch.tensor(r["labels"])
            mask[i, : len(r["input_ids"])] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    training_args = TrainingArguments(
        output_dir=str(Path(args.tmp) / "hf"),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        learning_rate=2e-4,
        lr_scheduler_type="constant",
        logging_steps=1000,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=args.hf_bf16,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        seed=42,
    )
    # The same examples in the same order as tunesmith's first epoch (its order is a pure function of the seed).
    from tunesmith.engine.batching import epoch_order

    dataset = [dataset[i] for i in epoch_order(len(dataset), 42, 0)]

    class InOrder(Trainer):
        def _get_train_sampler(self, *_args: object, **_kwargs: object) -> object:
            return torch.utils.data.SequentialSampler(self.train_dataset)

    trainer = InOrder(model=model, args=training_args, train_dataset=dataset, data_collator=collate)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    # The examples trained on: the first steps x batch of the order (the dataloader collates one batch ahead,
    # so counting in the collator would count a batch that is never trained on).
    useful = sum(len(row["input_ids"]) for row in dataset[: args.steps * args.batch])
    return {"useful_tokens": useful, "seconds": seconds, "precision": "bf16" if args.hf_bf16 else "fp32"}


def run_estimate(args: argparse.Namespace) -> dict:
    """``tunesmith estimate``'s prediction for the tunesmith side (no model weights loaded)."""
    from transformers import AutoConfig

    from tunesmith.core.config import MethodConfig, ModelConfig, TrainingConfig
    from tunesmith.engine.estimate import estimate
    from tunesmith.models.load import load_tokenizer
    from tunesmith.models.resolve import resolve_model

    resolved = resolve_model("smollm2-135m")
    examples = load_examples(load_tokenizer(ModelConfig(name="smollm2-135m"), resolved), args.max_len, args.examples)
    cfg = TrainingConfig(batch_size=args.batch, max_seq_len=args.max_len, seed=42, packing=not args.no_packing)
    result = estimate(
        AutoConfig.from_pretrained(resolved.location),
        MethodConfig(name="lora"),
        cfg,
        [len(e.input_ids) for e in examples],
        [e.n_targets for e in examples],
        device="cpu",
        packing=not args.no_packing,
    ).to_dict()
    result["tokens_per_s"] = result["tokens_per_epoch"] / result["seconds_per_epoch"]
    return result


def child(args: argparse.Namespace) -> None:
    result = run_tunesmith(args) if args.which == "tunesmith" else run_hf(args)
    result["tokens_per_s"] = result["useful_tokens"] / result["seconds"]
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-len", type=int, default=512)
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--micro-batch", type=int, default=None, help="tunesmith's training.micro_batch_size")
    parser.add_argument("--no-packing", action="store_true", help="tunesmith pads instead of packing")
    parser.add_argument("--which", choices=["both", "tunesmith", "hf", "estimate"], default="both")
    parser.add_argument("--precision", default="auto", help="tunesmith's training.precision (auto: by the processor)")
    parser.add_argument("--hf-bf16", action="store_true", help="the Trainer with bf16=True (CPU autocast)")
    parser.add_argument("--tmp", default="/tmp/tunesmith-bench")
    args = parser.parse_args()
    if args.which == "estimate":
        print(json.dumps(run_estimate(args), indent=2))
        return
    if args.which != "both":
        child(args)
        return
    results = {}
    for which in ("hf", "tunesmith"):
        command = [sys.executable, __file__, *sys.argv[1:], "--which", which]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        results[which] = json.loads(next(line for line in output.splitlines() if line.startswith("RESULT "))[7:])
    hf, ts = results["hf"], results["tunesmith"]
    print(json.dumps(results, indent=2))
    sys.path.insert(0, str(REPO / "src"))
    from tunesmith.core.environment import collect

    env = collect({})
    cpu = env["cpu"]
    print(
        f"machine: {cpu['model']} ({', '.join(cpu['flags'] or []) or 'no AVX2'}), {cpu['threads']} threads, "
        f"torch {env['packages']['torch']}, python {env['python']}"
    )
    rates = matmul_rates()
    per_token = 4 * linear_weights()
    print(f"machine matmul: fp32 {rates['fp32']:.0f} GFLOP/s, bf16 {rates['bf16']:.0f} GFLOP/s")
    for name, side in (("HF Trainer + peft", hf), ("tunesmith", ts)):
        achieved = side["tokens_per_s"] * per_token / 1e9
        print(
            f"{name} ({side['precision']}): {achieved:.1f} GFLOP/s useful = {achieved / rates['fp32']:.0%} of fp32 "
            f"peak, {achieved / rates['bf16']:.0%} of bf16 peak"
        )
    print(f"tokens/s ratio (tunesmith / HF Trainer + peft): {ts['tokens_per_s'] / hf['tokens_per_s']:.2f}x")
    print(f"peak RSS ratio (tunesmith / HF Trainer + peft): {ts['peak_rss_gib'] / hf['peak_rss_gib']:.2f}x")
    predicted = run_estimate(args)
    print(
        f"tunesmith estimate: peak {predicted['peak_gib']:.2f} GiB (measured {ts['peak_rss_gib']:.2f}), "
        f"{predicted['tokens_per_s']:.1f} tokens/s (measured {ts['tokens_per_s']:.1f})"
    )


if __name__ == "__main__":
    main()
