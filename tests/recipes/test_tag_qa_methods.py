"""Methods with the tag and qa task heads: what each trains, and that the saved model reloads to the same outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers.configs import write_qa_config, write_tag_config
from tests.helpers.models import build_token_bert
from tunesmith.core.errors import ConfigError
from tunesmith.data.records import record_from_dict
from tunesmith.models.adapt import count_parameters
from tunesmith.pipeline.run import Run

HIDDEN, FF, LAYERS = 32, 64, 2  # the tiny BERT of build_token_bert (tests/helpers/models.py)
LAYER = (
    4 * (HIDDEN * HIDDEN + HIDDEN) + (HIDDEN * FF + FF) + (FF * HIDDEN + HIDDEN) + 2 * (2 * HIDDEN)
)  # + 2 LayerNorms
HEAD_OUTPUTS = {"tag": 4, "qa": 2}  # B-location, B-person, I-person, O; start and end


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_token_bert(tmp_path_factory.mktemp("tiny-bert-methods"))


def _trained(task: str, bert_dir: Path, folder: Path, method: dict) -> tuple[Run, torch.nn.Module, int]:
    write = write_tag_config if task == "tag" else write_qa_config
    run = Run.from_file(write(folder, bert_dir, method=method, training={"max_steps": 2}, eval={"enabled": False}))
    run.open()
    run.prepare()
    tuned = run.train().eval()
    return run, tuned, json.loads(run.dir.state.read_text())["stages"]["train"]["trainable_parameters"]


def _loss(run: Run, model: torch.nn.Module, tokenizer: object) -> torch.Tensor:
    rows = run.dir.split("train").read_text().splitlines()[:4]
    training = run.recipe.training
    examples = [training.encode_row(record_from_dict(json.loads(r)), tokenizer, run.config) for r in rows]
    fns = training.train_fns(tokenizer, run.config, None)
    with torch.no_grad():
        return fns.loss(model, fns.collate(examples))[0]


@pytest.mark.parametrize("task", ["tag", "qa"])
@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ({"name": "freeze", "freeze": {"train_layers": 1}}, lambda head: LAYER + head),
        ({"name": "lora", "lora": {"r": 4}}, lambda head: LAYERS * 4 * (4 * 2 * HIDDEN + 2 * (HIDDEN + FF)) + head),
        ({"name": "full"}, None),
    ],
)
def test_trainable_parameters_and_reload(
    task: str, method: dict, expected: object, bert_dir: Path, tmp_path: Path
) -> None:
    run, tuned, trainable = _trained(task, bert_dir, tmp_path, method)
    head = HIDDEN * HEAD_OUTPUTS[task] + HEAD_OUTPUTS[task]
    if expected is None:  # full: every weight
        assert trainable == sum(p.numel() for p in tuned.parameters())
    else:  # only the method's weights and the fresh head (LoRA: r * (in + out) on each of the 6 linears per layer)
        assert trainable == expected(head), (trainable, expected(head))
    reloaded, tokenizer = run.load_tuned()
    assert torch.equal(_loss(run, tuned, tokenizer), _loss(run, reloaded, tokenizer))


@pytest.mark.parametrize(
    ("task", "method"),
    [
        ("tag", {"name": "prompt", "prompt": {"num_virtual_tokens": 4}}),
        ("tag", {"name": "adapter", "adapter": {"target_modules": ["output.dense"], "size": 8}}),
        ("tag", {"name": "prefix", "prefix": {"num_virtual_tokens": 4}}),
        ("qa", {"name": "prefix", "prefix": {"num_virtual_tokens": 4}}),
        ("qa", {"name": "ia3"}),
    ],
)
def test_other_peft_methods_save_and_reload_the_head_with_them(
    task: str, method: dict, bert_dir: Path, tmp_path: Path
) -> None:
    run, tuned, trainable = _trained(task, bert_dir, tmp_path, method)
    head = HIDDEN * HEAD_OUTPUTS[task] + HEAD_OUTPUTS[task]
    assert head < trainable < count_parameters(tuned)[1] // 10
    reloaded, tokenizer = run.load_tuned()  # a fresh base with a new random head, plus what was saved
    assert torch.equal(_loss(run, tuned, tokenizer), _loss(run, reloaded, tokenizer))


@pytest.mark.parametrize("task", ["tag", "qa"])
def test_methods_meant_for_large_decoders_are_rejected_with_a_reason(task: str, bert_dir: Path, tmp_path: Path) -> None:
    write = write_tag_config if task == "tag" else write_qa_config
    with pytest.raises(ConfigError, match=f"which the '{task}' task does not support"):
        Run.from_file(write(tmp_path, bert_dir, method={"name": "prune"}))
