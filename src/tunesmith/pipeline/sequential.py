"""Sequential fine-tuning: the stages of one config run in order, each from the previous stage's model.

Each stage is an ordinary run in ``runs/<name>/stages/<N>-<stage>/`` (so every stage has its own data report,
metrics, evaluation and report). A stage that trained whole weights hands its ``model/`` folder to the next
stage; one that trained a LoRA or IA3 adapter is merged first (``merged/``, checked like ``tunesmith export
--merge``), so the next stage may use any method or task head on top of it.
"""

from __future__ import annotations

from typing import Any

from tunesmith.core.config import RunConfig, stage_configs
from tunesmith.core.console import console
from tunesmith.core.errors import ConfigError
from tunesmith.core.fs import atomic_dir, write_text
from tunesmith.models.adapt import needs_base
from tunesmith.models.merge import check_loaded, reference_outputs, save_whole
from tunesmith.pipeline.probes import probe_inputs
from tunesmith.pipeline.run import Run

MERGEABLE = ("lora", "qlora", "ia3")  # adapters that fold into the base weights


def run_stages(config: RunConfig, force: bool = False, resume: bool = False) -> dict[str, Any] | None:
    """Run every stage not yet done; return the last stage's evaluation metrics."""
    configs = stage_configs(config)
    for stage_config in configs[:-1]:
        check_handover(stage_config)
    config.run_dir.mkdir(parents=True, exist_ok=True)
    write_text(config.run_dir / "config.yaml", config.to_yaml())
    finished: list[Run] = []
    results = None
    for index, (stage, stage_config) in enumerate(zip(config.stages, configs, strict=True)):
        if finished:
            stage_config.model = stage_config.model.model_copy(update={"name": str(starting_model(finished[-1]))})
        run = Run(stage_config, replay=(stage.replay, [r.dir.split("train") for r in finished]))
        console.rule(
            f"stage {index + 1}/{len(configs)}: {stage.name} ({stage_config.task.name}, "
            f"{stage_config.method.name}) from {stage_config.model.name}"
        )
        results = run.run(force=force, resume=resume)
        finished.append(run)
    return results


def check_handover(config: RunConfig) -> None:
    """Reject, before anything trains, a stage whose model cannot become the next stage's starting model."""
    method = config.method.name
    if not needs_base(config.method):
        return
    if method not in MERGEABLE:
        raise ConfigError(
            f"stage {config.output.name}: method '{method}' trains weights that cannot be merged into the model, so "
            "the next stage cannot start from it.\n  fix: use lora, ia3, full or freeze for every stage but the last"
        )
    if config.task.name not in ("sft", "lm"):
        raise ConfigError(
            f"stage {config.output.name}: a {method} adapter of a '{config.task.name}' model cannot be handed on; "
            "only causal-LM stages (lm, sft) are merged.\n  fix: use method full or freeze for this stage"
        )


def starting_model(run: Run) -> Any:
    """The folder the next stage loads as its base model: the trained weights, merged with the base if needed."""
    if not needs_base(run.config.method):
        return run.dir.model.resolve()
    merged = run.dir.root / "merged"
    if not (merged / "config.json").is_file():
        console.print(f"merging the {run.config.method.name} adapter of {run.dir.root} for the next stage")
        tuned, tokenizer = run.load_tuned()
        reference = reference_outputs(tuned, probe_inputs(run.dir, tokenizer))
        with atomic_dir(merged) as tmp:
            check_loaded(save_whole(tuned, tokenizer, tmp, reference, merge=True, dtype="fp32"), reference, "fp32")
            tokenizer.save_pretrained(tmp)
    return merged.resolve()
