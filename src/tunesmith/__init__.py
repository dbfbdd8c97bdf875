"""tunesmith: fine-tune large language models on your own data."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Run", "__version__", "load_config"]

if TYPE_CHECKING:
    from tunesmith.config import load_config
    from tunesmith.run import Run


def __getattr__(name: str) -> Any:
    # Lazy, so `tunesmith --help` and config checks do not pay for importing torch.
    if name == "Run":
        from tunesmith.run import Run

        return Run
    if name == "load_config":
        from tunesmith.config import load_config

        return load_config
    raise AttributeError(name)
