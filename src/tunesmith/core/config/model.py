"""The ``model`` section: which base model to fine-tune."""

from __future__ import annotations

from pydantic import Field

from tunesmith.core.config.base import Section


class ModelConfig(Section):
    name: str = Field(description="Alias (smollm2-135m, minilm-l6), Hugging Face hub id, local folder or .gguf file.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    trust_remote_code: bool = Field(False, description="Run model code shipped with a hub repo. Off unless asked.")
    from_run: str | None = Field(
        None,
        description="Continual learning: start from this earlier run's tuned model (its run directory; the same "
        "base model and method), e.g. set by `tunesmith run CONFIG --from runs/NAME`.",
    )
