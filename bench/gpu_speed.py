"""GPU training speed: tunesmith's engine against a plain Hugging Face + peft loop (padded, SDPA).

A Llama-3.2-1B-shaped model with random weights (hidden 2048, 16 layers, 32 heads, 8 KV heads, intermediate
8192, vocabulary 128,256), bf16 weights, LoRA r=16 on all linear layers (or full fine-tuning), micro-batches of
8 examples with Alpaca-like lengths (log-normal, mean ~240 tokens, capped at 2048; the first ~40% of each is
prompt, unlabelled). Useful tokens are non-padding tokens. Each variant: warm-up steps (compilation, varying
shapes), then timed steps, repeated; peak memory is torch.cuda.max_memory_allocated over the whole variant.

    python bench/gpu_speed.py --variants hf_lora,ts_lora,hf_full,ts_full --out results.json

Baseline (hf_*): model(**batch, labels=...) with the model's own loss (full logits), padded to the longest
example of the micro-batch, SDPA attention, torch AdamW (foreach), gradient clipping at 1.0 (as Trainer).
tunesmith (ts_*): ``tunesmith.engine.loop.train`` itself: packed rows isolated by a FlexAttention document
mask, target-only logits (liger's fused linear cross-entropy when installed), liger RMSNorm/RoPE/SwiGLU, fused
AdamW, bf16 autocast; ``_compile`` variants add ``training.compile`` (regional torch.compile).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

SHAPE = dict(
    vocab_size=128256,
    hidden_size=2048,
    intermediate_size=8192,
    num_hidden_layers=16,
    num_attention_heads=32,
    num_key_value_heads=8,
    max_position_embeddings=8192,
    rope_theta=500000.0,
    tie_word_embeddings=True,
)


DEVICE = "cuda"


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False


def alpaca_like(n: int, seed: int = 0, mean: float = 240.0, sigma: float = 0.8, cap: int = 2048) -> list[Example]:
    generator = torch.Generator().manual_seed(seed)
    mu = math.log(mean) - sigma**2 / 2
    lengths = torch.empty(n).log_normal_(mu, sigma, generator=generator).round().clamp(16, cap).long().tolist()
    examples = []
    for length in lengths:
        ids = torch.randint(3, SHAPE["vocab_size"], (length,), generator=generator).tolist()
        prompt = int(length * 0.4)
        examples.append(Example(ids, [-100] * prompt + ids[prompt:]))
    return examples


def build_model(method: str, attn: str, dtype: torch.dtype = torch.bfloat16) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    from tunesmith.core.config import MethodConfig
    from tunesmith.models.adapt import apply_method

    torch.manual_seed(0)
    config = LlamaConfig(**SHAPE, attn_implementation=attn)
    with torch.device(DEVICE):
        model = LlamaForCausalLM(config).to(dtype)
    return apply_method(model, MethodConfig(name=method))


def padded(examples: list[Example]) -> dict[str, torch.Tensor]:
    width = max(len(e.input_ids) for e in examples)
    ids = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        ids[i, : len(e.input_ids)] = torch.tensor(e.input_ids)
        labels[i, : len(e.labels)] = torch.tensor(e.labels)
        mask[i, : len(e.input_ids)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def run_hf(method: str, examples: list[Example], args: argparse.Namespace) -> dict:
    from tunesmith.engine.batching import epoch_order

    model = build_model(method, "sdpa")
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    order = epoch_order(len(examples), 42, 0)
    rates = []
    step = 0
    for repeat in range(args.repeats + 1):  # repeat 0 is the warm-up
        n = args.warmup if repeat == 0 else args.steps
        tokens = 0
        torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(n):
            idx = order[(step * args.batch) % len(order) :][: args.batch]
            step += 1
            batch = {k: v.cuda(non_blocking=True) for k, v in padded([examples[i] for i in idx]).items()}
            tokens += int(batch["attention_mask"].sum())
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            float(loss)
        torch.cuda.synchronize()
        if repeat:
            rates.append(tokens / (time.perf_counter() - started))
    del model, optimizer
    return {"tokens_per_s": rates}


def run_ts(method: str, examples: list[Example], args: argparse.Namespace, **options: object) -> dict:
    from tunesmith.core.config import TrainingConfig
    from tunesmith.engine.loop import make_accelerator, train
    from tunesmith.recipes import sft

    batch = int(options.pop("batch", args.batch))
    row = int(options.pop("row", 2048))
    attn = str(options.pop("attn", "flex_attention"))
    model = build_model(method, attn)
    accelerator = make_accelerator("bf16")
    fns = sft.task_fns(type("T", (), {"pad_token_id": 0})(), pack_len=row)
    rates = []
    for repeat in range(args.repeats + 1):
        cfg = TrainingConfig(
            max_steps=args.warmup if repeat == 0 else args.steps,
            batch_size=batch,
            max_seq_len=row,
            learning_rate=1e-5,
            scheduler="constant",
            precision="bf16",
            seed=42 + repeat,
            trackers=[],
            attention=attn,
            **options,
        )
        summary = train(model, examples, fns, cfg, accelerator=accelerator)
        if repeat:
            rates.append(summary.tokens / summary.seconds)
    del model
    return {"tokens_per_s": rates}


def isolation_check() -> dict:
    """Max |logit difference| between each example in a packed FlexAttention row and the example alone (fp32)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from tunesmith.engine.loop import to_device
    from tunesmith.engine.packing import model_inputs, pack

    torch.manual_seed(0)
    small = dict(SHAPE, num_hidden_layers=2, hidden_size=256, intermediate_size=512, vocab_size=1000)
    small.update(num_attention_heads=8, num_key_value_heads=2)
    model = LlamaForCausalLM(LlamaConfig(**small, attn_implementation="flex_attention")).cuda().eval()
    examples = [torch.randint(3, 1000, (n,)).tolist() for n in (50, 130, 77, 200)]
    batch = pack([(ids, ids) for ids in examples], 512, 0)
    accelerator = type("A", (), {"device": torch.device("cuda")})()
    batch = to_device(batch, model, accelerator)
    worst = 0.0
    with torch.no_grad():
        logits = model(**model_inputs(model, batch)).logits
        ref = LlamaForCausalLM(LlamaConfig(**small, attn_implementation="sdpa")).cuda().eval()
        ref.load_state_dict(model.state_dict())
        for r in range(batch["input_ids"].size(0)):
            seq = batch["seq_ids"][r]
            for doc in seq[seq >= 0].unique().tolist():
                where = (seq == doc).nonzero().flatten()
                alone = ref(input_ids=batch["input_ids"][r, where][None]).logits[0]
                worst = max(worst, float((logits[r, where] - alone).abs().max()))
    return {"max_abs_logit_diff_fp32": worst}


def qlora_check(args: argparse.Namespace, examples: list[Example]) -> dict:
    """QLoRA through tunesmith's own loading path (4-bit nf4 base weights), a few steps: does it train?"""
    from transformers import LlamaConfig, LlamaForCausalLM

    from tunesmith.core.config import MethodConfig, ModelConfig, TrainingConfig
    from tunesmith.engine.loop import make_accelerator, train
    from tunesmith.models.adapt import apply_method, quantization_config
    from tunesmith.models.load import load_causal_lm
    from tunesmith.recipes import sft

    folder = Path("/tmp/llama-1b-random")
    if not folder.is_dir():
        torch.manual_seed(0)
        with torch.device("cuda"):
            LlamaForCausalLM(LlamaConfig(**SHAPE)).to(torch.bfloat16).save_pretrained(folder)
    method = MethodConfig(name="qlora")
    model = load_causal_lm(ModelConfig(name=str(folder)), quantization=quantization_config(method))
    model = apply_method(model, method)
    torch.cuda.reset_peak_memory_stats()
    cfg = TrainingConfig(max_steps=12, batch_size=8, max_seq_len=2048, precision="bf16", trackers=[], packing=True)
    fns = sft.task_fns(type("T", (), {"pad_token_id": 0})(), pack_len=2048)
    summary = train(model, examples, fns, cfg, accelerator=make_accelerator("bf16"))
    return {"steps": summary.steps, "final_loss": summary.train_loss, "tokens_per_s": summary.tokens_per_second}


def estimate_vs_measured(examples: list[Example], args: argparse.Namespace, method: str, **options: object) -> dict:
    """``tunesmith estimate``'s prediction for a variant, then the variant measured (bf16 weights, as here)."""
    from transformers import LlamaConfig

    from tunesmith.core.config import MethodConfig, TrainingConfig
    from tunesmith.engine.estimate import estimate

    batch = int(options.get("batch", args.batch))
    cfg = TrainingConfig(batch_size=batch, max_seq_len=2048, precision="bf16", attention="flex_attention",
                         gradient_checkpointing=bool(options.get("gradient_checkpointing", False)))  # fmt: skip
    lengths = [len(e.input_ids) for e in examples]
    targets = [sum(1 for x in e.labels[1:] if x != -100) for e in examples]
    predicted = estimate(
        LlamaConfig(**SHAPE), MethodConfig(name=method), cfg, lengths, targets, device="cuda", weight_bytes=2
    ).to_dict()
    predicted["tokens_per_s"] = predicted["tokens_per_epoch"] / predicted["seconds_per_epoch"]
    torch.cuda.reset_peak_memory_stats()
    measured = run_ts(method, examples, args, **options)
    return {"estimate": predicted, **measured}


def product_path(examples: list[Example], args: argparse.Namespace) -> dict:
    """The model loaded with SDPA, as tunesmith loads it; training.attention auto must switch to FlexAttention."""
    from tunesmith.engine.packing import attention_implementation

    result = run_ts("lora", examples, args, attn="sdpa", attention="auto")
    model = build_model("lora", "sdpa")
    from tunesmith.engine.model_options import choose_attention

    result["attention_used"] = choose_attention(model, "auto", True)
    result["model_reports"] = attention_implementation(model)
    return result


def micro_batch_auto(examples: list[Example], args: argparse.Namespace) -> dict:
    """A micro-batch of 96 examples at 2048 tokens cannot fit with full fine-tuning: the OOM message, then auto."""
    from tunesmith.core.config import TrainingConfig
    from tunesmith.engine.loop import make_accelerator, train
    from tunesmith.recipes import sft

    long = [Example(list(range(3, 2051)), [-100] * 800 + list(range(803, 2051))) for _ in range(96)]
    model = build_model("full", "flex_attention")
    fns = sft.task_fns(type("T", (), {"pad_token_id": 0})(), pack_len=2048)
    out: dict = {}
    for micro in (None, "auto"):
        cfg = TrainingConfig(max_steps=2, batch_size=96, max_seq_len=2048, precision="bf16", trackers=[],
                             micro_batch_size=micro)  # fmt: skip
        try:
            summary = train(model, long, fns, cfg, accelerator=make_accelerator("bf16"))
            out[str(micro)] = {"steps": summary.steps, "loss": summary.train_loss}
        except Exception as error:
            out[str(micro)] = {"error": f"{type(error).__name__}: {error}"[:700]}
        gc.collect()
        torch.cuda.empty_cache()
    del model
    return out


VARIANTS = {
    "est_lora_b8": lambda ex, a: estimate_vs_measured(ex, a, "lora"),
    "est_lora_b32": lambda ex, a: estimate_vs_measured(ex, a, "lora", batch=32),
    "est_full_b8": lambda ex, a: estimate_vs_measured(ex, a, "full"),
    "est_lora_b64_gc": lambda ex, a: estimate_vs_measured(ex, a, "lora", batch=64, gradient_checkpointing=True),
    "product_path": product_path,
    "micro_auto": micro_batch_auto,
    "ts_full_b32": lambda ex, a: run_ts("full", ex, a, batch=32),
    "ts_full_b32_compile": lambda ex, a: run_ts("full", ex, a, batch=32, compile=True),
    "hf_lora": lambda ex, a: run_hf("lora", ex, a),
    "ts_lora": lambda ex, a: run_ts("lora", ex, a),
    "ts_lora_sdpa": lambda ex, a: run_ts("lora", ex, a, attn="sdpa", liger=False),
    "ts_lora_compile": lambda ex, a: run_ts("lora", ex, a, compile=True),
    "ts_lora_b32": lambda ex, a: run_ts("lora", ex, a, batch=32),
    "ts_lora_b32_compile": lambda ex, a: run_ts("lora", ex, a, batch=32, compile=True),
    "ts_lora_b64_gc": lambda ex, a: run_ts("lora", ex, a, batch=64, gradient_checkpointing=True),
    "hf_full": lambda ex, a: run_hf("full", ex, a),
    "ts_full": lambda ex, a: run_ts("full", ex, a),
    "ts_full_compile": lambda ex, a: run_ts("full", ex, a, compile=True),
    "isolation": lambda ex, a: isolation_check(),
    "qlora": lambda ex, a: qlora_check(a, ex),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="hf_lora,ts_lora,hf_full,ts_full")
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--examples", type=int, default=1024)
    parser.add_argument("--out", default="gpu_speed.json")
    args = parser.parse_args()
    examples = alpaca_like(args.examples)
    lengths = [len(e.input_ids) for e in examples]
    results: dict = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "mean_length": sum(lengths) / len(lengths),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    for name in args.variants.split(","):
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        try:
            result = VARIANTS[name](examples, args)
        except Exception as error:  # one failing variant must not lose the others' figures
            traceback.print_exc()
            result = {"error": f"{type(error).__name__}: {error}"[:500]}
        result["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        result["wall_s"] = round(time.perf_counter() - started, 1)
        results[name] = result
        print(name, json.dumps(result), flush=True)
        Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
