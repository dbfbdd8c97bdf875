"""GRPO and PPO on a toy task with a tiny word-level model: reward = the target word appears in the reply.
Mean reward rises over a CI-sized run, KL to the reference stays bounded, and the LoRA policy and reference share
one base model."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from tunesmith.pipeline.run import Run
from tunesmith.recipes.grpo import group_advantages
from tunesmith.recipes.ppo import gae

WORDS = [
    "good",
    "bad",
    "yes",
    "no",
    "maybe",
    "red",
    "blue",
    "green",
    "cat",
    "dog",
    "sun",
    "moon",
    "tree",
    "rock",
    "fish",
    "bird",
]
TARGET = "good"
LORA_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"]


def says_target(prompts: list[str], completions: list[str], references: list[str | None]) -> list[float]:
    """The toy reward (used as 'tests.recipes.test_grpo:says_target'): 1 when the target word is in the reply."""
    return [float(TARGET in c.split()) for c in completions]


@pytest.fixture(scope="module")
def word_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama over a 16-word vocabulary (plus ChatML tokens): a random policy says 'good' now and then."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from tests.helpers.models import CHATML

    folder = tmp_path_factory.mktemp("word-llama")
    vocab = {t: i for i, t in enumerate(["<pad>", "<|im_start|>", "<|im_end|>", "<unk>", "user", "assistant", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<|im_end|>", bos_token="<|im_start|>", unk_token="<unk>"
    )
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    fast.chat_template = CHATML
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        tie_word_embeddings=False,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return folder


def toy_config(folder: Path, model_dir: Path, task: str, steps: int, **rl: object) -> Path:
    rows = [{"prompt": f"{a} {b}", "completion": TARGET} for a in WORDS[1:6] for b in WORDS[6:14]]
    data = folder / "prompts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = {
        "model": {"name": str(model_dir)},
        "task": {
            "name": task,
            "rl": {"reward": ["tests.recipes.test_grpo:says_target"], "max_new_tokens": 6, "num_generations": 8, **rl},
        },
        "data": {"train": str(data), "test_fraction": 0.2},
        # A 32-wide model's final RMSNorm bounds how far its body can move the logits; LoRA on lm_head too.
        "method": {"name": "lora", "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": LORA_MODULES}},
        "training": {"max_steps": steps, "batch_size": 4, "max_seq_len": 32, "learning_rate": 2e-2, "warmup_ratio": 0},
        "eval": {"max_new_tokens": 6, "batch_size": 8},
        "output": {"dir": str(folder / "runs"), "name": task},
    }
    path = folder / f"{task}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _mean(rows: list[dict], key: str) -> float:
    return sum(r[key] for r in rows) / len(rows)


@pytest.mark.parametrize(
    ("task", "rl"),
    [
        ("grpo", {"kl_coef": 0.02}),
        ("ppo", {"kl_coef": 0.02, "num_generations": 4, "target_kl": 2.0, "kl_horizon": 64}),
    ],
)
def test_reward_rises_and_kl_stays_bounded(task: str, rl: dict, word_model_dir: Path, tmp_path: Path) -> None:
    run = Run.from_file(toy_config(tmp_path, word_model_dir, task, 10, **rl))
    metrics = run.run()
    rows = [json.loads(line) for line in run.dir.metrics.read_text().splitlines()]
    assert len(rows) == 10
    first, last = _mean(rows[:4], "reward"), _mean(rows[-4:], "reward")
    assert last > first + 0.2, (first, last)
    # KL to the reference stays bounded: grpo logs the mean per-token k3 estimate, ppo the summed log-ratio of a
    # completion (at most max_new_tokens=6 tokens).
    assert all(0 <= r["kl"] < 5 for r in rows) if task == "grpo" else all(abs(r["kl"]) < 20 for r in rows)
    assert {"reward", "kl", "entropy", "loss"} <= set(rows[0])
    if task == "ppo":
        assert {"value_loss", "kl_coef"} <= set(rows[0])
        # The adaptive controller raises the KL coefficient while the KL is above target_kl.
        for before, after in itertools.pairwise(rows):
            assert (after["kl_coef"] > before["kl_coef"]) == (before["kl"] > 2.0)
        assert (run.dir.model / "value_head.safetensors").is_file()
    assert metrics["tuned"]["mean_reward"] > metrics["base"]["mean_reward"]
    assert metrics["tuned"]["win_rate"] > 0.5 and abs(metrics["tuned"]["kl_from_reference"]) < 10
    assert (run.dir.root / "report.html").is_file()


def test_group_advantages_are_normalised_within_each_group() -> None:
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 5.0, 5.0, 5.0, 5.0])
    adv = group_advantages(rewards, 4)
    assert torch.allclose(adv[4:], torch.zeros(4))  # a group in full agreement teaches nothing
    assert adv[0] > 0 > adv[1] and torch.isclose(adv[:4].sum(), torch.tensor(0.0), atol=1e-5)


def test_gae_with_lambda_one_is_the_return_minus_value() -> None:
    rewards = torch.tensor([[0.0, 0.1, 0.2, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.4, 0.3, 0.2, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])
    adv = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    returns = torch.tensor([[1.3, 1.3, 1.2, 1.0, 0.0]])
    assert torch.allclose(adv, (returns - values) * mask, atol=1e-6)


def test_rl_reference_is_the_lora_policy_with_adapters_off(word_model_dir: Path) -> None:
    """PPO / GRPO hold one copy of the base weights: the reference is the policy with its adapter disabled."""
    from transformers import AutoModelForCausalLM

    from tests.helpers.training import unique_storage_numel
    from tunesmith.core.config import MethodConfig
    from tunesmith.models.adapt import apply_method
    from tunesmith.recipes.common.rl import reference, reference_copy

    base_numel = unique_storage_numel(AutoModelForCausalLM.from_pretrained(word_model_dir))
    policy = apply_method(AutoModelForCausalLM.from_pretrained(word_model_dir), MethodConfig(name="lora"))
    adapter_numel = sum(p.numel() for n, p in policy.named_parameters() if "lora_" in n)
    assert reference_copy(None, policy) is None  # no frozen copy is loaded for an adapter policy
    with torch.no_grad():
        for p in (p for n, p in policy.named_parameters() if "lora_B" in n):
            p.add_(0.3)
        ids = torch.tensor([[1, 4, 8, 9, 2]])
        with reference(policy, None) as ref_model:
            ref_logits = ref_model(input_ids=ids).logits
        assert unique_storage_numel(policy) == base_numel + adapter_numel
        plain = AutoModelForCausalLM.from_pretrained(word_model_dir)(input_ids=ids).logits
        assert torch.allclose(ref_logits, plain, atol=1e-5)
        assert not torch.allclose(policy(input_ids=ids).logits, plain, atol=1e-3)


def test_programmatic_rewards_by_name() -> None:
    from tunesmith.core.config import RlConfig
    from tunesmith.core.errors import ConfigError
    from tunesmith.data.records import Message
    from tunesmith.recipes.common.reward_fns import build_reward

    prompt = [Message("user", "Capital of France? Answer in one word.")]
    rl = RlConfig(
        reward=["exact_match", "format", "length", "tests.recipes.test_grpo:says_target"], format_pattern=r"\w+\.?"
    )
    rl.target_length = 5
    score = build_reward(rl)
    replies = ["Paris.", "It is Paris, good", "Lyon"]
    # exact_match ignores case and punctuation; format wants one word; length peaks at 5 characters.
    assert score([prompt] * 3, replies, ["paris"] * 3) == pytest.approx([1 + 1 + 0.8, 0 + 0 + 0 + 1, 0 + 1 + 0.8])
    weighted = build_reward(RlConfig(reward=["exact_match", "contains_reference"], reward_weights=[2.0, 0.5]))
    assert weighted([prompt], ["Paris, of course"], ["Paris"]) == [0.5]
    with pytest.raises(ConfigError, match="neither a built-in"):
        build_reward(RlConfig(reward=["no_such_reward"]))
    with pytest.raises(ConfigError, match="cannot load"):
        build_reward(RlConfig(reward=["tests.recipes.test_grpo:missing"]))


@pytest.mark.parametrize(
    ("task", "rl"),
    [
        ("grpo", {"kl_coef": 0.02, "num_generations": 4}),
        ("ppo", {"kl_coef": 0.02, "num_generations": 4, "target_kl": 2.0, "kl_horizon": 64}),
    ],
)
def test_a_killed_rl_run_resumes_to_the_same_model(
    task: str, rl: dict, word_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tunesmith train --resume` restores weights, optimizer, scheduler, RNG (sampling, LoRA dropout), prompt order,
    and ppo's value head and adaptive KL coefficient: the model equals that of the run never interrupted."""
    from safetensors.torch import load_file

    from tests.helpers.cli import run_cli
    from tests.helpers.paths import REPO
    from tunesmith.core.errors import TunesmithError
    from tunesmith.core.rundir import RunDir
    from tunesmith.engine import checkpoints

    path = toy_config(tmp_path, word_model_dir, task, 4, **rl)
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config["method"]["lora"]["dropout"] = 0.1  # dropout draws from the RNG that sampling draws from
    config["training"] |= {"save_every": 2}
    config["eval"] = {"enabled": False}
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    run = Run.from_file(path)
    run.prepare()
    run.train()
    resumed = run.dir
    assert [step for step, _ in checkpoints(resumed.checkpoints)] == [2, 4]
    straight = RunDir(tmp_path / "straight")  # the uninterrupted run, kept aside
    shutil.copytree(resumed.root, straight.root)
    # Make it look killed between step 2's checkpoint and the end (after step 4 was logged).
    shutil.rmtree(resumed.checkpoints / "step-4")
    shutil.rmtree(resumed.model)
    resumed.clear_from(["train"])
    assert len(resumed.metrics.read_text(encoding="utf-8").splitlines()) == 4
    with pytest.raises(TunesmithError, match="unfinished training run"):  # no --resume: not silently redone
        Run.from_file(path).train()
    if task == "ppo":  # the CLI in a fresh process, as after a kill (grpo resumes in this one: it saves ~10 s)
        monkeypatch.setenv("PYTHONPATH", str(REPO))  # the reward lives in tests.recipes.test_grpo
        result = run_cli("train", str(path), "--resume")
        assert result.returncode == 0, result.stderr
        assert "continuing from step 2" in result.stderr
    else:
        Run.from_file(path).train(resume=True)

    files = ["adapter_model.safetensors"] + (["value_head.safetensors"] if task == "ppo" else [])
    for file in files:
        ours, reference = load_file(resumed.model / file), load_file(straight.model / file)
        assert ours.keys() == reference.keys() and ours
        assert all(torch.equal(ours[k], reference[k]) for k in reference), file

    def rows(run_dir: RunDir) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in map(json.loads, run_dir.metrics.open())]

    assert rows(resumed) == rows(straight) and len(rows(straight)) == 4
    assert resumed.read_state()["stages"]["train"]["tokens"] == straight.read_state()["stages"]["train"]["tokens"]
