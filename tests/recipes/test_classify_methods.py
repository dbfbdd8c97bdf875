"""Every method on a classification head (tiny BERT encoder, tiny Llama decoder): the trainable parameters are
exactly the method's (plus the new head), save -> reload gives the same logits, and peft adapters load in plain
peft; decoder heads read the last real token whatever the padding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from tests.helpers.models import build_classify_bert
from tunesmith.core.config import validate_config
from tunesmith.data.records import Labeled
from tunesmith.models.adapt import apply_method, count_parameters, load_trained, needs_base, save_model
from tunesmith.models.prefix_compat import accept_past_key_values, needs_shim
from tunesmith.recipes import classify

LABELS = ["negative", "positive"]
TEXTS = ["a gorgeous , witty , seductive movie .", "dull", "the plot is thin but the acting is good enough to watch"]
METHODS = {
    "full": {},
    "freeze": {"freeze": {"train_layers": 1, "train_head": True}},
    "lora": {"lora": {"r": 4, "alpha": 8, "target_modules": "all-linear"}},
    "ia3": {},
    "prefix": {"prefix": {"num_virtual_tokens": 5}},
    "prompt": {"prompt": {"num_virtual_tokens": 6}},
    "adapter": {"adapter": {"size": 8}},
}
ADAPTER_TARGETS = {"bert": ["output.dense"], "llama": ["o_proj", "down_proj"]}


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_classify_bert(tmp_path_factory.mktemp("tiny-bert-methods"))


@pytest.fixture(params=["bert", "llama"])
def model_dir(request: pytest.FixtureRequest, tiny_bert: Path, tiny_model_dir: Path) -> tuple[str, Path]:
    return request.param, tiny_bert if request.param == "bert" else tiny_model_dir


def _config(model_dir: Path, method: str, kind: str, seed: int = 1) -> Any:
    settings = dict(METHODS[method])
    if method == "adapter":
        settings = {"adapter": {**settings["adapter"], "target_modules": ADAPTER_TARGETS[kind]}}
    return validate_config(
        {
            "model": {"name": str(model_dir)},
            "data": {"train": "unused.tsv", "label_names": {0: "negative", 1: "positive"}},
            "task": {"name": "classify"},
            "method": {"name": method, **settings},
            "training": {"seed": seed, "max_seq_len": 32},
            "eval": {"enabled": False},
        }
    )


def _batch(cfg: Any, model_dir: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    fns = classify.train_fns(tokenizer, cfg)
    examples = [classify.encode_row(Labeled(t, "positive"), tokenizer, cfg) for t in TEXTS]
    batch = fns.collate(examples)
    batch.pop("labels")
    return batch


def _head(model: nn.Module) -> nn.Module:
    return model.classifier if hasattr(model, "classifier") else model.score


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def expected_trainable(base: nn.Module, method: str, cfg: Any, kind: str) -> int:
    """The method's own parameter count, worked out from the base model's shapes."""
    config, head = base.config, _numel(_head(base))
    linears = {n: m for n, m in base.named_modules() if isinstance(m, nn.Linear) and m is not _head(base)}
    if method == "full":
        return _numel(base)
    if method == "freeze":
        layers = base.bert.encoder.layer if kind == "bert" else base.model.layers
        return _numel(layers[-1]) + head
    if method == "lora":
        r = cfg.method.lora.r
        return sum(r * (m.in_features + m.out_features) for m in linears.values()) + head
    if method == "prefix":
        kv_heads = getattr(config, "num_key_value_heads", config.num_attention_heads)
        kv_dim = kv_heads * config.hidden_size // config.num_attention_heads
        return cfg.method.prefix.num_virtual_tokens * config.num_hidden_layers * 2 * kv_dim + head
    if method == "prompt":
        return cfg.method.prompt.num_virtual_tokens * config.hidden_size + head
    if method == "adapter":
        size, targets = cfg.method.adapter.size, ADAPTER_TARGETS[kind]
        chosen = [m for n, m in linears.items() if any(n.endswith("." + t) for t in targets)]
        assert len(chosen) == 2 * config.num_hidden_layers  # after attention and after feed-forward, per layer
        return sum(2 * m.out_features * size + size + m.out_features for m in chosen) + head
    raise AssertionError(method)


@pytest.mark.parametrize("method", list(METHODS))
def test_method_trains_what_it_should_and_reloads_identically(
    method: str, model_dir: tuple[str, Path], tmp_path: Path
) -> None:
    kind, folder = model_dir
    cfg = _config(folder, method, kind)
    base = classify.load_model(cfg, labels=LABELS)
    model = apply_method(base, cfg.method, tokenizer_path=str(folder), task_type=classify.RECIPE.peft_task_type)
    trainable, _ = count_parameters(model)
    if method == "ia3":  # peft picks the modules for the architecture: check the head and some scaling vectors
        vectors = sum(p.numel() for n, p in model.named_parameters() if "ia3_" in n)
        assert vectors > 0 and trainable == vectors + _numel(_head(classify.load_model(cfg, labels=LABELS)))
    else:
        assert trainable == expected_trainable(classify.load_model(cfg, labels=LABELS), method, cfg, kind)
    head_params = [p for n, p in model.named_parameters() if ("classifier" in n or "score" in n) and p.requires_grad]
    assert head_params, "the new head must train"

    torch.manual_seed(5)  # move every trained weight, so an adapter left at its identity start would be noticed
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    batch = _batch(cfg, folder)
    model.eval()
    logits = model(**batch).logits
    logits.square().sum().backward()  # every trained weight reaches the output (a prefix the model ignored would not)
    silent = [n for n, p in model.named_parameters() if p.requires_grad and not (p.grad is not None and p.grad.any())]
    assert not silent, silent
    expected = logits.detach()
    saved = tmp_path / "model"
    saved.mkdir()
    save_model(model, cfg.method, saved)

    # Reload onto a base whose fresh head is initialised differently: the saved head must win.
    other = _config(folder, method, kind, seed=99)
    reload_base = classify.load_model(other, labels=LABELS) if needs_base(cfg.method) else None
    loaded = load_trained(cfg.method, saved, reload_base, classify.auto_class()).eval()
    with torch.no_grad():
        assert torch.allclose(loaded(**batch).logits, expected, atol=1e-5)
    assert classify.model_labels(loaded) == LABELS

    if method in ("lora", "ia3", "prefix", "prompt"):  # the adapter folder is plain peft's
        from peft import PeftModel
        from transformers import AutoModelForSequenceClassification

        plain = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
        plain.config.pad_token_id = loaded.config.pad_token_id
        if method == "prefix" and needs_shim(plain):
            # transformers >= 5.25 names the argument `cache`; peft 0.21 still probes for `past_key_values`
            # and refuses a task head. This fails (and can go) once peft follows: see models/prefix_compat.py.
            with pytest.raises(ValueError, match="past key values"), torch.no_grad():
                PeftModel.from_pretrained(plain, str(saved)).eval()(**batch)
            plain = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
            plain.config.pad_token_id = loaded.config.pad_token_id
            accept_past_key_values(plain)
        plain = PeftModel.from_pretrained(plain, str(saved)).eval()
        with torch.no_grad():
            assert torch.allclose(plain(**batch).logits, expected, atol=1e-5)


# Prompt tuning puts its virtual tokens before the left padding, so padding moves the text away from them by a few
# positions (rotary embeddings see that distance): close, not identical. Every other method is padding-exact.
@pytest.mark.parametrize(("method", "atol"), [("full", 1e-5), ("lora", 1e-5), ("prompt", 2e-3)])
def test_decoder_head_reads_the_last_real_token_whatever_the_padding(
    method: str, atol: float, tiny_model_dir: Path
) -> None:
    cfg = _config(tiny_model_dir, method, "llama")
    model = apply_method(classify.load_model(cfg, labels=LABELS), cfg.method, task_type="SEQ_CLS").eval()
    assert model.config.pad_token_id is not None
    batch = _batch(cfg, tiny_model_dir)
    assert (batch["attention_mask"][:, 0] == 0).any()  # left padding happened
    with torch.no_grad():
        together = model(**batch).logits
        for row in range(len(TEXTS)):
            keep = batch["attention_mask"][row].bool()
            alone = model(input_ids=batch["input_ids"][row, keep][None], attention_mask=torch.ones(1, int(keep.sum())))
            assert torch.allclose(alone.logits[0], together[row], atol=atol)


def test_rejected_methods_and_settings_say_why(tiny_model_dir: Path) -> None:
    from tunesmith.core.errors import ConfigError
    from tunesmith.pipeline.run import Run

    def config(**changes: Any) -> Any:
        raw = {
            "model": {"name": str(tiny_model_dir)},
            "data": {"train": "x.tsv", "label_names": {0: "negative", 1: "positive"}},
            "task": {"name": "classify"},
            "eval": {"enabled": False},
        }
        for section, values in changes.items():
            raw[section] = {**raw.get(section, {}), **values}
        return validate_config(raw)

    with pytest.raises(ConfigError, match="prune"):
        Run(config(method={"name": "prune"}))
    with pytest.raises(ConfigError, match="label_names"):
        Run(config(data={"label_names": {}}, task={"name": "classify", "classify": {"head": "generation"}}))
    with pytest.raises(ConfigError, match=r"only with task\.classify\.head: generation"):
        config(task={"name": "classify", "classify": {"prompt": "Review: {text}"}})
    with pytest.raises(ConfigError, match="label_separator"):
        Run(config(task={"name": "classify", "classify": {"label_separator": ":"}}))
