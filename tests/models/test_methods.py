"""Fine-tuning methods beyond LoRA: what each trains, and that what it saves loads back to the same model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from peft import PeftModel
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from tests.helpers.cli import run_cli, run_cli_in_process
from tests.helpers.configs import write_tiny_config
from tunesmith.core.config import MethodConfig
from tunesmith.core.errors import ConfigError
from tunesmith.data.records import Chat
from tunesmith.models.adapt import apply_method, count_parameters
from tunesmith.pipeline.run import Run
from tunesmith.recipes import sft

IDS = torch.tensor([[5, 17, 42, 99, 3, 250]])
HIDDEN, KV_DIM, FF, LAYERS = 64, 32, 128, 2  # build_tiny_llama (tests/helpers): 4 heads of 16, 2 key/value heads


def _tiny(tiny_model_dir: Path) -> LlamaForCausalLM:
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir)


def _numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _trainable(tiny_model_dir: Path, **method: object) -> int:
    model = apply_method(_tiny(tiny_model_dir), MethodConfig.model_validate(method), tokenizer_path=str(tiny_model_dir))
    return count_parameters(model)[0]


# ------------------------------------------------------------------ config


@pytest.mark.parametrize(
    ("method", "needle"),
    [
        ({"name": "prompt", "freeze": {"train_layers": 1}}, "method.freeze is set but method.name is 'prompt'"),
        ({"name": "lora", "prefix": {"num_virtual_tokens": 4}}, "method.prefix is set but method.name is 'lora'"),
        ({"name": "prune", "prune": {"then": "full"}, "lora": {"r": 4}}, "method.lora is set"),
        ({"name": "lora", "qlora": {"quant_type": "fp4"}}, "method.qlora is set but method.name is 'lora'"),
        ({"name": "freeze", "freeze": {"train_layers": 0, "train_head": False}}, "method.freeze trains nothing"),
        ({"name": "ia3", "ia3": {"target_modules": ["k_proj"]}}, "set both target_modules and feedforward_modules"),
    ],
)
def test_a_section_the_method_does_not_use_is_an_error(method: dict, needle: str) -> None:
    from tunesmith.core.config import validate_config

    with pytest.raises(ConfigError, match=needle):
        validate_config(
            {"model": {"name": "x"}, "data": {"train": "t.jsonl"}, "eval": {"enabled": False}, "method": method}
        )


@pytest.mark.parametrize("name", ["full", "freeze", "lora", "qlora", "prefix", "prompt", "ia3", "adapter", "prune"])
def test_the_resolved_config_names_only_the_sections_its_method_uses(name: str) -> None:
    from tunesmith.core.config import validate_config

    raw = {"model": {"name": "x"}, "data": {"train": "t.jsonl"}, "eval": {"enabled": False}, "method": {"name": name}}
    config = validate_config(raw)
    written = yaml.safe_load(config.to_yaml())
    assert set(written["method"]) == {"name", *config.method.used_sections()}
    assert validate_config(written) == config  # config.yaml of a run validates again when the run is reopened


def test_sections_a_method_uses_are_accepted() -> None:
    assert MethodConfig.model_validate({"name": "qlora", "lora": {"r": 4}, "qlora": {"double_quant": False}})
    assert MethodConfig.model_validate({"name": "prune", "prune": {"layers": 1}, "lora": {"r": 4}}).lora.r == 4
    assert MethodConfig.model_validate({"name": "lora", "lora": {"dora": True, "rslora": True}}).lora.dora


# ------------------------------------------------------------------ what each method trains


def test_freeze_trains_exactly_the_top_layers_and_the_head(tiny_model_dir: Path) -> None:
    model = _tiny(tiny_model_dir)
    last_layer, head = _numel(model.model.layers[-1]), _numel(model.lm_head)
    assert (
        _trainable(tiny_model_dir, name="freeze", freeze={"train_layers": 1, "train_head": True}) == last_layer + head
    )
    assert _trainable(tiny_model_dir, name="freeze", freeze={"train_layers": 1, "train_head": False}) == last_layer
    assert _trainable(tiny_model_dir, name="freeze", freeze={"train_layers": 0, "train_head": True}) == head
    frozen = apply_method(model, MethodConfig.model_validate({"name": "freeze", "freeze": {"train_layers": 1}}))
    assert not any(p.requires_grad for p in frozen.model.layers[0].parameters())
    assert not frozen.model.embed_tokens.weight.requires_grad
    with pytest.raises(ConfigError, match="the model has 2 layers"):
        _trainable(tiny_model_dir, name="freeze", freeze={"train_layers": 3})


def test_virtual_token_methods_train_their_tokens_only(tiny_model_dir: Path) -> None:
    assert _trainable(tiny_model_dir, name="prompt", prompt={"num_virtual_tokens": 7}) == 7 * HIDDEN
    # prefix tuning: a key and a value vector per virtual token in every layer (key/value heads only)
    assert _trainable(tiny_model_dir, name="prefix", prefix={"num_virtual_tokens": 5}) == LAYERS * 2 * 5 * KV_DIM


def test_prompt_tuning_starts_from_the_init_text_embeddings(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    method = MethodConfig.model_validate({"name": "prompt", "prompt": {"num_virtual_tokens": 4, "init_text": "great"}})
    model = apply_method(_tiny(tiny_model_dir), method, tokenizer_path=str(tiny_model_dir))
    ids = AutoTokenizer.from_pretrained(tiny_model_dir)("great", add_special_tokens=False)["input_ids"]
    expected = model.get_input_embeddings().weight[(ids * 4)[:4]]
    assert torch.equal(model.prompt_encoder["default"].embedding.weight, expected)


def test_ia3_and_adapter_train_small_vectors_and_bottlenecks(tiny_model_dir: Path) -> None:
    # IA3 on Llama (peft's default): scale the outputs of k_proj and v_proj and the input of down_proj
    assert _trainable(tiny_model_dir, name="ia3") == LAYERS * (KV_DIM + KV_DIM + FF)
    ia3 = {"target_modules": ["q_proj", "down_proj"], "feedforward_modules": ["down_proj"]}
    assert _trainable(tiny_model_dir, name="ia3", ia3=ia3) == LAYERS * (HIDDEN + FF)
    # one bottleneck (down: HIDDEN->8 with bias, up: 8->HIDDEN with bias) after o_proj and after down_proj per layer
    per_adapter = HIDDEN * 8 + 8 + 8 * HIDDEN + HIDDEN
    assert _trainable(tiny_model_dir, name="adapter", adapter={"size": 8}) == LAYERS * 2 * per_adapter


def test_adapters_start_as_the_identity(tiny_model_dir: Path) -> None:
    with torch.no_grad():
        before = _tiny(tiny_model_dir)(input_ids=IDS).logits
        after = apply_method(_tiny(tiny_model_dir), MethodConfig(name="adapter"))(input_ids=IDS).logits
    assert torch.equal(before, after)


def test_dora_adds_magnitudes_and_rslora_scales_by_sqrt_rank(tiny_model_dir: Path) -> None:
    lora = {"r": 4, "alpha": 8.0, "target_modules": ["q_proj", "v_proj"]}
    plain = _trainable(tiny_model_dir, name="lora", lora=lora)
    assert plain == LAYERS * (4 * (HIDDEN + HIDDEN) + 4 * (HIDDEN + KV_DIM))
    dora = _trainable(tiny_model_dir, name="lora", lora={**lora, "dora": True})
    assert dora == plain + LAYERS * (HIDDEN + KV_DIM)  # one magnitude per output feature
    model = apply_method(
        _tiny(tiny_model_dir), MethodConfig.model_validate({"name": "lora", "lora": {**lora, "rslora": True}})
    )
    assert model.base_model.model.model.layers[0].self_attn.q_proj.scaling["default"] == pytest.approx(8.0 / 2)


def test_qlora_on_cpu_is_rejected_before_any_model_loads(tiny_model_dir: Path, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: qlora is allowed")
    config = write_tiny_config(tmp_path, tiny_model_dir, method={"name": "qlora"})
    result = run_cli_in_process("run", str(config))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "method.name is 'qlora', which needs a CUDA GPU" in result.stderr and "method.name: lora" in result.stderr
    assert not (tmp_path / "runs" / "tiny" / "data").exists()  # rejected before even the data was prepared


# ------------------------------------------------------------------ save -> reload


def _train(tmp_path: Path, model_dir: Path, method: dict) -> tuple[Run, torch.nn.Module]:
    config = write_tiny_config(
        tmp_path, model_dir, method=method, training={"learning_rate": 1e-2, "max_steps": 2}, eval={"enabled": False}
    )
    run = Run.from_file(config)
    run.open()
    run.prepare()
    return run, run.train().eval()


@pytest.mark.parametrize(
    "method",
    [
        {"name": "freeze", "freeze": {"train_layers": 1}},
        {"name": "lora", "lora": {"dora": True, "rslora": True, "r": 4}},
        {"name": "prefix", "prefix": {"num_virtual_tokens": 4}},
        {"name": "prompt", "prompt": {"num_virtual_tokens": 4, "init_text": "Sentiment"}},
        {"name": "ia3"},
        {"name": "adapter", "adapter": {"size": 8}},
    ],
    ids=lambda m: m["name"],
)
def test_saved_model_reloads_with_the_same_logits_and_generates(
    tiny_model_dir: Path, tmp_path: Path, method: dict
) -> None:
    run, trained = _train(tmp_path, tiny_model_dir, method)
    base = _tiny(tiny_model_dir).eval()
    with torch.no_grad():
        ours = trained(input_ids=IDS).logits
        base_logits = base(input_ids=IDS).logits
        # a run opened from its directory, as eval/predict/serve do; adapters are attached to `base` in place
        reloaded = Run.from_dir(run.dir.root).tuned_from_base(base).eval()
        theirs = reloaded(input_ids=IDS).logits
    assert (ours[:, -IDS.size(1) :] - base_logits).abs().max() > 1e-3  # training changed the model
    assert torch.allclose(ours, theirs, atol=1e-5)
    state = json.loads(run.dir.state.read_text())
    assert state["stages"]["train"]["trainable_parameters"] == count_parameters(trained)[0]
    if method["name"] in ("lora", "prefix", "prompt", "ia3"):  # a standard peft adapter, loadable without tunesmith
        with torch.no_grad():
            plain = PeftModel.from_pretrained(_tiny(tiny_model_dir), str(run.dir.model)).eval()
            assert torch.allclose(plain(input_ids=IDS).logits, ours, atol=1e-5)
    chats = [
        Chat.from_dict({"messages": [{"role": "user", "content": t}, {"role": "assistant", "content": "x"}]})
        for t in ("Sentiment of: fine", "Sentiment of: a dull and long film")
    ]
    replies = sft.generate_replies(reloaded, run.tuned_tokenizer(), chats, max_new_tokens=3, batch_size=2)
    assert len(replies) == 2 and all(0 < r.confidence <= 1 for r in replies)


def test_freeze_leaves_the_lower_layers_untouched(tiny_model_dir: Path, tmp_path: Path) -> None:
    run, _ = _train(tmp_path, tiny_model_dir, {"name": "freeze", "freeze": {"train_layers": 1, "train_head": False}})
    base, tuned = _tiny(tiny_model_dir), AutoModelForCausalLM.from_pretrained(run.dir.model)
    assert torch.equal(base.model.layers[0].self_attn.q_proj.weight, tuned.model.layers[0].self_attn.q_proj.weight)
    assert torch.equal(base.lm_head.weight, tuned.lm_head.weight)
    assert not torch.equal(base.model.layers[1].mlp.down_proj.weight, tuned.model.layers[1].mlp.down_proj.weight)


# ------------------------------------------------------------------ prune


@pytest.fixture(scope="module")
def three_layer_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-layer tiny Llama whose middle layer adds nothing to the residual stream (it is the one to drop)."""
    folder = tmp_path_factory.mktemp("tiny-llama-3")
    for item in tiny_model_dir.iterdir():
        if "token" in item.name or item.name == "chat_template.jinja":
            shutil.copy(item, folder / item.name)
    config = _tiny(tiny_model_dir).config
    config.num_hidden_layers = 3
    torch.manual_seed(1)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.model.layers[1].self_attn.o_proj.weight.zero_()
        model.model.layers[1].mlp.down_proj.weight.zero_()
    model.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.mark.parametrize("then", ["lora", "full"])
def test_prune_drops_the_least_influential_layer_and_reloads(three_layer_dir: Path, tmp_path: Path, then: str) -> None:
    run, trained = _train(tmp_path, three_layer_dir, {"name": "prune", "prune": {"layers": 1, "then": then}})
    report = json.loads((run.dir.model / "prune.json").read_text())
    assert report["dropped"] == [1] and report["influence"][1] == pytest.approx(0.0, abs=1e-6)
    assert (report["layers_before"], report["layers_after"]) == (3, 2)
    per_layer = _numel(_tiny(three_layer_dir).model.layers[0])
    assert report["parameters_before"] - report["parameters_after"] == per_layer
    assert json.loads(run.dir.state.read_text())["stages"]["train"]["prune"]["dropped"] == [1]
    reloaded = AutoModelForCausalLM.from_pretrained(run.dir.model).eval()  # plain transformers, no adapter
    assert reloaded.config.num_hidden_layers == 2 and len(reloaded.model.layers) == 2
    assert run.tuned_from_base(None).config.num_hidden_layers == 2
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=IDS).logits, trained(input_ids=IDS).logits, atol=1e-5)
        assert reloaded.generate(input_ids=IDS, max_new_tokens=3, do_sample=False).shape == (1, IDS.size(1) + 3)


# ------------------------------------------------------------------ end to end


def test_prompt_tuning_runs_end_to_end_through_the_cli(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = write_tiny_config(
        tmp_path,
        tiny_model_dir,
        method={"name": "prompt", "prompt": {"num_virtual_tokens": 4}},
        eval={"few_shot": 0, "bias_probe": False, "forgetting_rows": 4},
    )
    result = run_cli("run", str(config))
    assert result.returncode == 0, result.stderr
    assert "method prompt, 256 of" in result.stderr  # 4 virtual tokens x hidden 64
    run_dir = tmp_path / "runs" / "tiny"
    assert json.loads((run_dir / "model" / "adapter_config.json").read_text())["peft_type"] == "PROMPT_TUNING"
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert 0.0 <= metrics["tuned"]["accuracy"] <= 1.0
    predictions = (run_dir / "eval" / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 12
