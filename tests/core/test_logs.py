"""Library output goes to the run's log, not the terminal (shown there too with --debug); on exit logging is as it
was, since the command also runs inside test processes."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest

from tunesmith.core.logs import LOG_NAME, attach, quiet_libraries


def _speak() -> None:
    from transformers.utils import logging as transformers_logging

    from tunesmith.models.load import quiet_transformers

    quiet_transformers()  # what every model and tokenizer load does first

    transformers_logging.get_logger("transformers.modeling_utils").warning("BertModel LOAD REPORT from: x")
    ds = logging.getLogger("DeepSpeed")
    handler = logging.StreamHandler()  # what DeepSpeed adds when it is imported
    ds.addHandler(handler)
    ds.warning("Setting accelerator to CPU.")
    ds.removeHandler(handler)
    warnings.warn("`old` is deprecated", FutureWarning, stacklevel=1)
    logging.getLogger("accelerate.utils").warning("an accelerate notice")


@pytest.mark.parametrize("debug", [False, True])
def test_library_output_goes_to_the_runs_log(tmp_path: Path, capfd: pytest.CaptureFixture, debug: bool) -> None:
    propagate = logging.getLogger("transformers").propagate
    with quiet_libraries(debug):
        _speak()  # before a run names its folder: held
        attach(tmp_path / "logs")
        logging.getLogger("tunesmith.server").error("tunesmith's own error")
    err = capfd.readouterr().err
    log = (tmp_path / "logs" / LOG_NAME).read_text()
    for line in (
        "LOAD REPORT",
        "Setting accelerator to CPU",
        "FutureWarning: `old` is deprecated",
        "accelerate notice",
    ):
        assert line in log
        assert (line in err) == debug
    assert "tunesmith's own error" in err and "tunesmith's own error" not in log
    assert logging.getLogger("transformers").propagate == propagate and not logging.getLogger("DeepSpeed").filters
    with pytest.warns(FutureWarning):  # warnings are Python's again
        warnings.warn("after", FutureWarning, stacklevel=1)
