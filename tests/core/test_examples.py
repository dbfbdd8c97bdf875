"""Every run config shipped in examples/ validates, and the local data files it names exist: a user's first command
must not fail on a typo in ours."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.paths import REPO
from tunesmith.core.config import load_config

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_the_example_config_validates_and_its_data_files_exist(path: Path) -> None:
    config = load_config(path)
    for split in ("train", "validation", "test"):
        source = getattr(config.data, split)
        if isinstance(source, str) and not source.startswith("hf:"):
            assert Path(source).exists(), f"{path.name}: data.{split} {source} does not exist"


def test_the_examples_are_found() -> None:
    assert len(EXAMPLES) >= 10 and any(p.name == "quickstart.yaml" for p in EXAMPLES)
