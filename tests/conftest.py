"""Shared fixtures: tiny models built from configs, the real packaged SmolLM2, and helpers to run the CLI."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SST2 = REPO / "examples" / "data" / "sst2"
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tiny_tokenizer(folder: Path) -> None:
    """A small byte-level BPE trained on SST-2 text, with ChatML special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<pad>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    lines = (SST2 / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]
    lines += ["Is the sentiment of this review positive or negative? Review: user assistant system"] * 20
    tokenizer.train_from_iterator(lines, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<|im_end|>", bos_token="<|im_start|>"
    )
    fast.chat_template = CHATML
    fast.save_pretrained(folder)


def build_tiny_llama(folder: Path, vocab_size: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)


def build_tiny_bert(
    folder: Path,
    hidden_size: int,
    num_layers: int,
    max_positions: int,
    dropout: float = 0.1,
    pooler: bool = True,
) -> Path:
    """A random BERT encoder (2 heads, feed-forward 2 x hidden, seed 0) with the packaged all-MiniLM-L6-v2
    tokenizer (uncased WordPiece); ``dropout`` 0.1 is BERT's default, ``pooler`` keeps the [CLS] pooling layer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from tunesmith.models.resolve import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm-l6").location)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=max_positions,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    BertModel(config, add_pooling_layer=pooler).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local HF folder with a 2-layer random Llama and a ChatML tokenizer (~0.2M parameters)."""
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("tiny-llama")
    build_tiny_tokenizer(folder)
    build_tiny_llama(folder, len(AutoTokenizer.from_pretrained(folder)))
    return folder


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The real SmolLM2-135M-Instruct, converted once from the packaged GGUF into the user cache."""
    from tunesmith.models.resolve import resolve_model

    return Path(resolve_model("smollm2-135m").location)


def write_tiny_config(folder: Path, model_dir: Path, **sections: dict) -> Path:
    """A run config on the SST-2 slice with the tiny model; ``sections`` update the defaults."""
    import yaml

    config = {
        "model": {"name": str(model_dir)},
        "data": {
            "train": str(SST2 / "train.tsv"),
            "test": str(SST2 / "dev.tsv"),
            "prompt_template": "Sentiment of: {sentence}",
            "completion_template": "{label}",
            "label_names": {0: "negative", 1: "positive"},
            "train_rows": 32,
            "test_rows": 12,
        },
        "training": {"max_steps": 3, "batch_size": 4, "max_seq_len": 64},
        "eval": {"max_new_tokens": 3, "batch_size": 6},
        "output": {"dir": str(folder / "runs"), "name": "tiny"},
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def free_port() -> int:
    """A TCP port nothing on this machine listens on now (for a server or a launch's rendezvous)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """Run the real `tunesmith` console script."""
    exe = Path(sys.executable).with_name("tunesmith")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


from tests.postgres import postgres  # noqa: E402, F401  (a throwaway PostgreSQL server, session-wide)
from tests.shipping import eos_model_dir, tuned_run_dir  # noqa: E402, F401  (fixtures shared by the shipping tests)
