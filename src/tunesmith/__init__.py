"""tunesmith: fine-tune large language models on your own data."""

from __future__ import annotations

import importlib.metadata
from typing import TYPE_CHECKING, Any

__version__ = importlib.metadata.version("tunesmith")  # one place: pyproject.toml
__all__ = ["Run", "__version__", "load_config"]

if TYPE_CHECKING:
    from tunesmith.core.config import load_config
    from tunesmith.pipeline.run import Run


def __getattr__(name: str) -> Any:
    # Lazy, so `tunesmith --help` and config checks do not pay for importing torch.
    if name == "Run":
        from tunesmith.pipeline.run import Run

        return Run
    if name == "load_config":
        from tunesmith.core.config import load_config

        return load_config
    raise AttributeError(name)
