"""`tunesmith export`: merged and adapter exports load in plain transformers / peft with the run's outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from peft import PeftModel
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.helpers.cli import run_cli, run_cli_in_process
from tests.helpers.models import EOS_ID

IDS = torch.tensor([[1, 5, 17, 42, 99, 3, 250, 2, 1, 7]])


def _adapter_logits(run_dir: Path, base_dir: Path) -> torch.Tensor:
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    with torch.no_grad():
        return PeftModel.from_pretrained(base, str(run_dir / "model")).eval()(input_ids=IDS).logits


def _fails_cleanly(result, *needles: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_merged_export_equals_the_adapter_model_and_stops_at_eos(
    tuned_run_dir: Path, eos_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "merged"
    result = run_cli("export", str(tuned_run_dir), "--out", str(out), "--merge")
    assert result.returncode == 0, result.stderr
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    assert not (out / "adapter_config.json").exists()

    model = AutoModelForCausalLM.from_pretrained(out)  # plain transformers, no peft
    with torch.no_grad():
        merged = model(input_ids=IDS).logits
    adapter = _adapter_logits(tuned_run_dir, eos_model_dir)
    base = AutoModelForCausalLM.from_pretrained(eos_model_dir)
    with torch.no_grad():
        assert (base(input_ids=IDS).logits - adapter).abs().max() > 1e-2  # the adapter matters
    assert (merged - adapter).abs().max() <= 1e-4

    # The base config says EOS is <|im_start|>; the export must stop at the chat template's <|im_end|>.
    generation = json.loads((out / "generation_config.json").read_text())
    eos = generation["eos_token_id"]
    assert (eos[0] if isinstance(eos, list) else eos) == EOS_ID
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.eos_token_id == EOS_ID and "<|im_start|>" in tokenizer.chat_template
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Sentiment of: a gorgeous , witty , seductive movie ."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    output = model.generate(**prompt, max_new_tokens=20, do_sample=False)[0, prompt["input_ids"].shape[1] :]
    assert output[-1] == EOS_ID and len(output) < 20  # stopped at EOS, not at the length limit
    assert tokenizer.decode(output, skip_special_tokens=True) in ("positive", "negative")

    summary = json.loads((out / "export.json").read_text())
    assert summary["kind"] == "merged" and summary["max_logit_diff"] <= 1e-4 and summary["checks"]["weights_identical"]


def test_model_card_says_what_the_model_is(tuned_run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "adapter"
    assert run_cli("export", str(tuned_run_dir), "--out", str(out)).returncode == 0
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: peft")  # no base_model: the tiny base is a local folder
    assert 'PeftModel.from_pretrained(base, "adapter")' in card  # the folder's name, not its temporary one
    for heading in ("## Base model", "## Data", "## Method and hyperparameters", "## Evaluation", "## Limitations"):
        assert heading in card
    metrics = json.loads((tuned_run_dir / "eval" / "metrics.json").read_text())
    assert f"| accuracy | {metrics['base']['accuracy']:.4f} | {metrics['tuned']['accuracy']:.4f} |" in card
    assert "| `training.learning_rate` | `0.01` |" in card and "| `method.lora.r` | `16` |" in card
    assert "train: 256 rows from `train.tsv`" in card
    assert "no explicit license" in card  # the licence paragraph of the data's SOURCE.md
    import torch  # the environment the run was trained in (environment.json)

    assert "## Environment" in card and f"torch {torch.__version__}" in card


def test_adapter_export_loads_in_peft(tuned_run_dir: Path, eos_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "adapter"
    result = run_cli("export", str(tuned_run_dir), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "README.md"} <= {
        p.name for p in out.iterdir()
    }
    assert not (out / "model.safetensors").exists()
    base = AutoModelForCausalLM.from_pretrained(eos_model_dir)
    with torch.no_grad():
        exported = PeftModel.from_pretrained(base, str(out)).eval()(input_ids=IDS).logits
    assert torch.allclose(exported, _adapter_logits(tuned_run_dir, eos_model_dir), atol=1e-6)


def test_bf16_export_from_a_moved_run(tuned_run_dir: Path, tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere" / "tuned"
    shutil.copytree(tuned_run_dir, moved)
    out = tmp_path / "bf16"
    result = run_cli("export", str(moved), "--out", str(out), "--merge", "--dtype", "bf16")
    assert result.returncode == 0, result.stderr
    with safe_open(str(out / "model.safetensors"), "pt") as tensors:
        assert {tensors.get_tensor(name).dtype for name in tensors.keys()} == {torch.bfloat16}  # noqa: SIM118
    assert AutoModelForCausalLM.from_pretrained(out).dtype == torch.bfloat16


def test_bad_export_arguments_are_explained(tuned_run_dir: Path, tmp_path: Path) -> None:
    _fails_cleanly(
        run_cli_in_process("export", str(tmp_path / "nope"), "--out", str(tmp_path / "x")), "not a run directory"
    )
    exists = tmp_path / "exists"
    exists.mkdir()
    _fails_cleanly(run_cli_in_process("export", str(tuned_run_dir), "--out", str(exists)), "already exists")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(tuned_run_dir / "config.yaml", unfinished / "config.yaml")
    _fails_cleanly(run_cli_in_process("export", str(unfinished), "--out", str(tmp_path / "y")), "no trained model yet")
    _fails_cleanly(
        run_cli_in_process("export", str(tuned_run_dir), "--out", str(tmp_path / "z"), "--dtype", "int3"),
        "--dtype 'int3'",
    )
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists() and not (tmp_path / "z").exists()


def test_gguf_round_trip_on_a_tiny_llama(tuned_run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "gguf"
    result = run_cli("export", str(tuned_run_dir), "--out", str(out), "--gguf", "f16")
    assert result.returncode == 0, result.stderr
    merged = AutoModelForCausalLM.from_pretrained(out)
    gguf = out / "gguf"
    assert [p.name for p in gguf.iterdir()] == ["model-f16.gguf"]
    back = AutoModelForCausalLM.from_pretrained(gguf, gguf_file="model-f16.gguf")  # plain transformers GGUF loading
    with torch.no_grad():
        expected, actual = merged(input_ids=IDS).logits, back(input_ids=IDS).logits
    assert (expected - actual).abs().max() <= 0.01 * expected.abs().max()  # f16 rounding, nothing worse
    assert torch.equal(expected.argmax(-1), actual.argmax(-1))
    assert "`gguf/model-f16.gguf`" in (out / "README.md").read_text()

    tokenizer = AutoTokenizer.from_pretrained(gguf, gguf_file="model-f16.gguf")
    assert (
        tokenizer.eos_token == "<|im_end|>"
        and tokenizer.chat_template == AutoTokenizer.from_pretrained(out).chat_template
    )
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Sentiment of: a gorgeous , witty , seductive movie ."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    output = back.generate(**prompt, max_new_tokens=20, do_sample=False)[0, prompt["input_ids"].shape[1] :]
    assert output[-1] == EOS_ID and tokenizer.decode(output, skip_special_tokens=True) in ("positive", "negative")


def test_q8_0_gguf_is_checked_against_the_model(tuned_run_dir: Path, tmp_path: Path) -> None:
    from tunesmith.pipeline.run import Run
    from tunesmith.ship.export import export_run

    result = export_run(Run.from_dir(tuned_run_dir), tmp_path / "q8", gguf="q8_0")
    check = result.checks["gguf"]
    assert result.gguf == tmp_path / "q8" / "gguf" / "model-q8_0.gguf" and result.gguf.is_file()
    assert 0 < check["max_logit_diff"] <= 0.1 * check["logit_scale"]  # quantized: close, not equal
    f16_size = 2 * sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tmp_path / "q8").parameters())
    assert result.gguf.stat().st_size < 0.75 * f16_size  # 8.5 bits per weight (norms aside), not 16


def test_full_fine_tuned_run_exports_whole_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    from tests.helpers.configs import write_tiny_config
    from tunesmith.pipeline.run import Run
    from tunesmith.ship.export import export_run

    config = write_tiny_config(
        tmp_path, tiny_model_dir, method={"name": "full"}, training={"max_steps": 2}, eval={"enabled": False}
    )
    trained = Run.from_file(config)
    trained.run()
    run = Run.from_dir(trained.dir.root)  # its config.yaml lists method.lora defaults: not "set" by the user
    assert run.config.method.name == "full"
    result = export_run(run, tmp_path / "full", merge=True)
    assert result.kind == "full" and result.max_logit_diff <= 1e-4
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "full")
    saved = AutoModelForCausalLM.from_pretrained(trained.dir.model)
    with torch.no_grad():
        assert torch.equal(exported(input_ids=IDS).logits, saved(input_ids=IDS).logits)
