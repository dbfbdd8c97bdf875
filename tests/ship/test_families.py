"""Decoder families beyond Llama: a tiny random model of each goes through train -> save -> reload -> merged export
(loaded back with plain transformers) -> one chat completion over HTTP; GPT-2 (Conv1D projections) also with
tunesmith's bottleneck adapters."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.helpers.cli import serving_app
from tests.helpers.configs import write_tiny_config
from tests.helpers.models import FAMILY_CONFIGS, build_tiny_family
from tests.helpers.training import sst2_examples
from tunesmith.core.errors import TunesmithError
from tunesmith.models.families import FAMILIES
from tunesmith.models.gguf_writer import ARCHITECTURES, write_gguf
from tunesmith.pipeline.run import Run
from tunesmith.pipeline.trained import TrainedRun

PROMPT = "Sentiment of: a gorgeous , witty , seductive movie ."
IDS = torch.tensor([[1, 5, 17, 42, 99, 3, 250, 2, 1, 7]])
MAX_TOKENS = 8


def _train(folder: Path, model_dir: Path, method: dict) -> tuple[Run, torch.nn.Module]:
    config = write_tiny_config(
        folder,
        model_dir,
        method=method,
        training={"max_steps": 6, "batch_size": 4, "learning_rate": 2e-2, "scheduler": "constant"},
        eval={"enabled": False},
    )
    run = Run.from_file(config)
    run.open(force=False)  # config.yaml and the run folder, as `tunesmith run` writes them
    run.prepare()
    return run, run.train().eval()


@torch.no_grad()
def _logits(model: torch.nn.Module) -> torch.Tensor:
    return model.eval()(input_ids=IDS).logits


@torch.no_grad()
def _sft_loss(model: torch.nn.Module, model_dir: Path) -> float:
    """Mean loss on the replies of 16 SST-2 training chats (the task the runs train on)."""
    from transformers import AutoTokenizer

    from tunesmith.recipes import sft

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    batch = sft.collate(sst2_examples(tokenizer, 16), tokenizer.pad_token_id)
    return float(model.eval()(**{k: batch[k] for k in ("input_ids", "attention_mask", "labels")}).loss)


def _greedy(model: torch.nn.Module, tokenizer) -> str:
    """The reloaded model's own greedy reply to PROMPT, as a user of plain transformers would get it."""
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=MAX_TOKENS, do_sample=False, eos_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)


def _served_reply(run: TrainedRun) -> str:
    """One chat completion from the OpenAI-compatible server, over HTTP, serving ``run``."""
    from tunesmith.server.app import Limits, create_app
    from tunesmith.ship.inference import load_pool

    app = create_app(load_pool([run]), Limits(max_tokens=64, max_body_bytes=20_000))
    body = {"model": "tiny", "messages": [{"role": "user", "content": PROMPT}], "temperature": 0}
    with serving_app(app) as url:
        response = httpx.post(f"{url}/v1/chat/completions", json={**body, "max_tokens": MAX_TOKENS}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize("family", list(FAMILY_CONFIGS))
def test_lora_round_trip(family: str, tmp_path: Path) -> None:
    from tunesmith.ship.export import export_run

    model_dir = build_tiny_family(tmp_path / "base", family)
    base_model = AutoModelForCausalLM.from_pretrained(model_dir)
    base, base_loss = _logits(base_model), _sft_loss(base_model, model_dir)
    run, trained = _train(tmp_path, model_dir, {"name": "lora", "lora": {"r": 8, "alpha": 16}})
    peft_config = trained.peft_config["default"]
    assert sorted(peft_config.target_modules) == sorted(FAMILIES[family].lora)
    assert peft_config.fan_in_fan_out == (family == "gpt2")  # GPT-2's Conv1D weights are stored transposed
    assert _sft_loss(trained, model_dir) < 0.95 * base_loss  # it trains
    expected = _logits(trained)
    assert (expected - base).abs().max() > 1e-2  # the adapter matters

    reloaded = TrainedRun.from_dir(run.dir.root)
    tuned, tokenizer = reloaded.load_tuned()
    assert torch.allclose(_logits(tuned), expected, atol=1e-5)

    exported = export_run(reloaded, tmp_path / "merged", merge=True)
    assert exported.kind == "merged" and exported.max_logit_diff <= 1e-4
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")  # transformers alone, no peft
    assert type(plain).__name__ == type(tuned.get_base_model()).__name__
    assert (_logits(plain) - expected).abs().max() <= 1e-4
    tied = base_model.config.tie_word_embeddings  # GPT-2 and Gemma: one matrix for input and output, still
    assert plain.config.tie_word_embeddings == tied
    assert (plain.get_output_embeddings().weight is plain.get_input_embeddings().weight) == tied

    # GGUF: the architectures llama.cpp runs and the writer knows (checked in llama.cpp by tests/ship/test_gguf.py);
    # every other family gets a clear refusal naming its architecture, and no file.
    if family in ARCHITECTURES:
        assert write_gguf(plain, tokenizer, tmp_path / "model.gguf", "f16").stat().st_size > 0
    else:
        with pytest.raises(TunesmithError, match=f"this model is '{family}'. Export without --gguf"):
            write_gguf(plain, tokenizer, tmp_path / "model.gguf", "f16")
        assert not (tmp_path / "model.gguf").exists()

    assert _served_reply(reloaded) == _greedy(tuned, tokenizer)


def test_bottleneck_adapters_on_gpt2_conv1d(tmp_path: Path) -> None:
    from transformers.pytorch_utils import Conv1D

    from tunesmith.models.bottleneck import load_adapters
    from tunesmith.ship.export import export_run

    model_dir = build_tiny_family(tmp_path / "base", "gpt2")
    base_model = AutoModelForCausalLM.from_pretrained(model_dir)
    base, base_loss = _logits(base_model), _sft_loss(base_model, model_dir)
    run, trained = _train(tmp_path, model_dir, {"name": "adapter", "adapter": {"size": 8}})
    adapted = [name for name, m in trained.named_modules() if isinstance(m, Conv1D) and hasattr(m, "bottleneck")]
    assert adapted == [f"transformer.h.{i}.{part}.c_proj" for i in range(2) for part in ("attn", "mlp")]
    trainable = {name for name, p in trained.named_parameters() if p.requires_grad}
    assert trainable and all(".bottleneck." in name for name in trainable)
    assert _sft_loss(trained, model_dir) < 0.95 * base_loss
    expected = _logits(trained)
    assert (expected - base).abs().max() > 1e-2  # the adapters change the outputs

    reloaded = TrainedRun.from_dir(run.dir.root)
    tuned, tokenizer = reloaded.load_tuned()
    assert torch.equal(_logits(tuned), expected)

    with pytest.raises(TunesmithError, match="cannot be folded into the base weights"):
        export_run(reloaded, tmp_path / "merged", merge=True)  # nonlinear layers: no merged weights
    exported = export_run(reloaded, tmp_path / "export")  # the adapters alone, in tunesmith's layout
    assert exported.kind == "bottleneck" and exported.max_logit_diff <= 1e-4
    loaded = load_adapters(AutoModelForCausalLM.from_pretrained(model_dir), tmp_path / "export")
    assert torch.equal(_logits(loaded), expected)
    assert 'load_adapters(base, Path("export"))' in (tmp_path / "export" / "README.md").read_text()

    assert _served_reply(reloaded) == _greedy(tuned, tokenizer)
