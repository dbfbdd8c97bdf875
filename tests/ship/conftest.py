"""Task-head runs trained once for the shipping tests (export, ensembles): tiny BERTs on SST-2 and tagged sentences."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.configs import write_tag_config
from tests.helpers.models import build_classify_bert, build_token_bert
from tests.helpers.task_runs import LORA, QUICK_EVAL, classify_config, train


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_classify_bert(tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="session")
def token_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_token_bert(tmp_path_factory.mktemp("token-bert"))


@pytest.fixture(scope="session")
def classify_lora(bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("classify")
    return train(classify_config(folder, bert_dir, "cls-lora", LORA, seed=1))


@pytest.fixture(scope="session")
def classify_full(bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("classify")
    return train(classify_config(folder, bert_dir, "cls-full", {"name": "full"}, seed=2))


@pytest.fixture(scope="session")
def tag_lora(token_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tag")
    return train(write_tag_config(folder, token_bert_dir, method=LORA, training={"max_steps": 4}, eval=QUICK_EVAL))
