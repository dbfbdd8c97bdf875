"""Config errors are caught before any work, named precisely, and reported without a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.helpers.cli import run_cli, run_cli_in_process
from tests.helpers.paths import REPO
from tunesmith.core.config import load_config
from tunesmith.core.errors import ConfigError

QUICKSTART = REPO / "examples" / "quickstart.yaml"


def error_of(*overrides: str, path: Path = QUICKSTART) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return str(info.value)


def test_quickstart_config_resolves_with_defaults() -> None:
    config = load_config(QUICKSTART)
    assert config.method.name == "lora" and config.method.lora.r == 16
    assert config.training.grad_accum == 1  # a default filled in
    assert config.output.name == "quickstart"  # named after the file
    assert Path(config.data.train).is_file()  # relative to the config file, not the working directory
    assert config.data.label_names == {"0": "negative", "1": "positive"}


def test_overrides_are_parsed_as_yaml_values() -> None:
    config = load_config(QUICKSTART, ["training.learning_rate=1e-4", "method.lora.target_modules=[q_proj, v_proj]"])
    assert config.training.learning_rate == pytest.approx(1e-4)
    assert config.method.lora.target_modules == ["q_proj", "v_proj"]


def test_wrong_type_names_key_expectation_and_value() -> None:
    assert "method.lora.r: expected a positive integer, got 'sixteen'" in error_of("method.lora.r=sixteen")


def test_typo_gets_a_close_match_suggestion() -> None:
    message = error_of("training.lerning_rate=1e-4")
    assert "training.lerning_rate: unknown key; did you mean 'training.learning_rate'?" in message


def test_bad_choice_lists_allowed_values() -> None:
    message = error_of("method.name=ful")
    assert "method.name: expected one of 'full', 'freeze', 'lora'," in message and "did you mean 'full'?" in message


def test_every_problem_is_reported_at_once() -> None:
    message = error_of("method.lora.r=0", "training.warmup_ratio=2", "training.batch_size=-1")
    assert message.count("\n  - ") == 3


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["training.eval_every=10"], "training.eval_every is set but there is no validation data"),
        (["method.name=full"], "method.lora is set but method.name is 'full'"),
        (["data.test=null"], "eval.enabled is true but data.test is not set"),
        (["data.validation_fraction=0.1", "data.validation=x.jsonl"], "set either data.validation"),
    ],
)
def test_impossible_combinations_are_rejected(overrides: list[str], expected: str) -> None:
    assert expected in error_of(*overrides)


def test_missing_required_section(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data": {"train": "x.jsonl"}}))
    assert "model: required but not set" in error_of(path=path)


def test_cli_reports_config_errors_with_exit_code_2_and_no_traceback() -> None:
    result = run_cli_in_process("config", "show", str(QUICKSTART), "--set", "training.lerning_rate=1")
    assert result.returncode == 2
    assert "did you mean 'training.learning_rate'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_cli_config_show_prints_every_default() -> None:
    result = run_cli("config", "show", str(QUICKSTART))
    assert result.returncode == 0, result.stderr
    shown = yaml.safe_load(result.stdout)
    assert shown["training"]["scheduler"] == "cosine"
    assert shown["eval"]["baseline"] is True
    assert set(shown) == {"model", "data", "task", "method", "training", "eval", "output"}
