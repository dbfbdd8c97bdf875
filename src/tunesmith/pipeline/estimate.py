"""Predicted peak memory and time per epoch of a run's training (``tunesmith estimate``, the studio's New run page):
the run's data prepared if needed, encoded as training would see them, and the engine's estimate on them."""

from __future__ import annotations

from tunesmith.engine.estimate import Estimate
from tunesmith.pipeline.run import Run


def estimate_run(run: Run, device: str | None = None) -> Estimate:
    """The estimate for ``run`` (opened); prepares its data first when that stage has not run."""
    from transformers import AutoConfig

    from tunesmith.data.render import ensure_chat_template
    from tunesmith.engine.estimate import estimate
    from tunesmith.models.adapt import supports_packing
    from tunesmith.models.load import load_tokenizer
    from tunesmith.models.resolve import resolve_model
    from tunesmith.pipeline.encoding import encode_split

    if not run.dir.is_done("prepare"):
        run.prepare()
    cfg = run.config
    resolved = resolve_model(cfg.model.name)
    tokenizer = load_tokenizer(cfg.model, resolved)
    ensure_chat_template(tokenizer)
    examples = encode_split(run, "train", tokenizer)
    model_config = AutoConfig.from_pretrained(resolved.location, trust_remote_code=cfg.model.trust_remote_code)
    return estimate(
        model_config,
        cfg.method,
        cfg.training,
        [len(e.input_ids) for e in examples],
        [e.n_targets for e in examples],
        device=device,
        packing=cfg.training.packing and supports_packing(cfg.method),
        tokenizer_path=resolved.location,
    )
