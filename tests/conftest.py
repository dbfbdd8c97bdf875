"""Fixtures shared across the test folders: tiny models built from configs, the real packaged SmolLM2, and a tiny
trained run for the shipping tests (export, predict, serve, chat, annotate). Helpers are in tests/helpers/."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
pytest.register_assert_rewrite("tests.helpers")  # their asserts explain themselves like the tests' own

from tests.helpers.models import build_tiny_llama, build_tiny_tokenizer  # noqa: E402
from tests.helpers.postgres import postgres  # noqa: E402, F401  (a throwaway PostgreSQL server, session-wide)
from tests.helpers.training import train_tiny_run  # noqa: E402


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


@pytest.fixture(scope="session")
def eos_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny llama, but its config names another EOS (<|im_start|>) than its chat template's end of turn.

    Real base models do this (``<|endoftext|>`` vs ``<|im_end|>``); an export must still stop at the end of turn.
    """
    folder = tmp_path_factory.mktemp("tiny-llama-eos") / "model"
    shutil.copytree(tiny_model_dir, folder)
    for name in ("config.json", "generation_config.json"):
        path = folder / name
        config = json.loads(path.read_text())
        config["eos_token_id"] = 1
        path.write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="session")
def tuned_run_dir(eos_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished, evaluated run whose model answers 'positive' / 'negative' and then emits <|im_end|>."""
    return train_tiny_run(tmp_path_factory.mktemp("tuned"), eos_model_dir, "tuned", steps=40)
