"""A whole run (``RunConfig``): the sections together, eval / output / sweep / stages, cross-section checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SerializerFunctionWrapHandler, field_validator, model_serializer, model_validator

from tunesmith.core.config.base import Section
from tunesmith.core.config.data import DataConfig
from tunesmith.core.config.gate import GateCheck
from tunesmith.core.config.graders import Grader, read_grader_file
from tunesmith.core.config.method import MethodConfig
from tunesmith.core.config.model import ModelConfig
from tunesmith.core.config.task import TaskConfig
from tunesmith.core.config.training import TrainingConfig


class GradingConfig(Section):
    """How graders run (``eval.grading``): the judge of model graders and the python grader's limits."""

    judge_model: str | None = Field(
        None,
        description="Replace the model of every score_model / label_model grader (e.g. smollm2-135m, a run "
        "directory) so OpenAI grader files run unchanged on a local judge; null: each grader's own model.",
    )
    judge_base_url: str | None = Field(
        None,
        description="An OpenAI-compatible endpoint (e.g. http://127.0.0.1:8000/v1) for judge models that are "
        "neither a run directory nor a local model.",
    )
    judge_api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the endpoint's key.")
    judge_max_new_tokens: int = Field(32, gt=0, description="Longest judge reply (sampling_params may lower it).")
    python_timeout_s: float = Field(10.0, gt=0, description="python grader: seconds per sample before it scores 0.")
    python_memory_mb: int = Field(1024, ge=64, description="python grader: address-space limit of its process.")
    lowest_samples: int = Field(5, ge=0, description="Lowest-scored test rows per grader kept for the report.")


class EvalConfig(Section):
    enabled: bool = Field(True, description="Evaluate base and tuned model on data.test after training.")
    baseline: bool = Field(True, description="Also evaluate the base model on the same rows.")
    max_new_tokens: int = Field(32, gt=0, description="Greedy generation length for sft predictions.")
    batch_size: int = Field(16, gt=0)
    bootstrap_samples: int = Field(1000, ge=100, description="Resamples for the 95% confidence interval of each delta.")
    few_shot: int = Field(
        3, ge=0, description="Also evaluate the base model with this many training examples in context (0: off)."
    )
    reward_model: str | None = Field(
        None,
        description="Preference and RL tasks: a reward-model run directory (task: reward) that judges the win rate "
        "of the tuned model's replies against the base model's; null: the task's own reward (ppo/grpo) if any.",
    )
    forgetting: bool = Field(True, description="Perplexity of base and tuned model on held-out general chat text.")
    forgetting_rows: int = Field(24, gt=0, le=48, description="How many of the 48 shipped general-chat rows to use.")
    forgetting_warn_pct: float = Field(10.0, gt=0, description="Warn when perplexity rises by more than this (%).")
    bias_probe: bool = Field(True, description="Swap gendered and identity terms in test inputs; report answer flips.")
    prompt_variants: list[str] = Field(
        default_factory=list,
        description="Instruction templates to compare, each with an {input} placeholder for the row's input, e.g. "
        "'Is this review positive or negative? {input}'; base and tuned model are scored on each.",
    )

    graders: list[Grader] = Field(
        default_factory=list,
        description="Graders in OpenAI's JSON shape (string_check, text_similarity, python, score_model, "
        "label_model, multi), or the path of a JSON/JSONL file of them; each is scored for base and tuned "
        "replies (metric grader:<name>) and can be a gate condition or an RL reward (task.rl.reward: grader:<name>).",
    )
    grading: GradingConfig = Field(default_factory=GradingConfig, description="Judges and python-grader limits.")
    gate: list[GateCheck] = Field(
        default_factory=list,
        description="Conditions export and serve require of the evaluation (checks: delta, score, forgetting, "
        "bias_flips, memorisation, factual_drift); see docs/evaluation.md.",
    )
    memorisation: bool = Field(
        False,
        description="Probe: prompt base and tuned model with the first half of training rows' replies and count "
        "verbatim / near-verbatim continuations of the second half (and planted data.canaries extracted).",
    )
    memorisation_rows: int = Field(32, gt=0, description="Training rows the memorisation probe uses.")
    factual_drift: bool = Field(
        False,
        description="Probe: base and tuned model answer ~50 shipped general-knowledge questions; report the share "
        "that goes from right to wrong.",
    )

    @field_validator("graders", mode="before")
    @classmethod
    def _grader_file(cls, value: Any) -> Any:
        return read_grader_file(value) if isinstance(value, str) else value

    @field_validator("graders")
    @classmethod
    def _unique_names(cls, value: list[Any]) -> list[Any]:
        names = [g.name for g in value]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"eval.graders: grader names must differ; {', '.join(map(repr, repeated))} repeats")
        return value

    @model_validator(mode="after")
    def _gate_has_its_measurements(self) -> EvalConfig:
        names = {f"grader:{g.name}" for g in self.graders}
        needs = {"forgetting": "forgetting", "bias_flips": "bias_probe", "memorisation": "memorisation"}
        needs["factual_drift"] = "factual_drift"
        for i, check in enumerate(self.gate):
            metric = getattr(check, "metric", "")
            if metric.startswith("grader:") and metric not in names:
                raise ValueError(
                    f"eval.gate[{i}]: {metric} names no grader of eval.graders ({', '.join(sorted(names)) or 'none'})"
                )
            if check.check == "delta" and not self.baseline:
                raise ValueError(f"eval.gate[{i}]: a delta check compares with the base model; set eval.baseline: true")
            switch = needs.get(check.check)
            if switch and not getattr(self, switch):
                raise ValueError(f"eval.gate[{i}]: the {check.check} check needs eval.{switch}: true")
        return self

    @field_validator("prompt_variants")
    @classmethod
    def _check_variants(cls, value: list[str]) -> list[str]:
        for i, template in enumerate(value):
            if "{input}" not in template:
                raise ValueError(f"eval.prompt_variants[{i}] {template!r} has no {{input}} placeholder")
        return value


class OutputConfig(Section):
    dir: str = Field("runs", description="Parent folder of run directories (relative to the working directory).")
    name: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Run name; defaults to the config file's stem."
    )


class SweepConfig(Section):
    """A hyperparameter search (``tunesmith sweep``): the ``sweep:`` section of a config or a sweep file."""

    space: dict[str, str | list[Any]] = Field(
        description="Config key -> distribution: loguniform(a, b), uniform(a, b), int(a, b[, step]), "
        "logint(a, b), choice(x, y, ...) or a YAML list of choices.",
        min_length=1,
    )
    metric: str = Field(
        "val_loss", description="Objective: val_loss, or a metric of the tuned model on the validation split."
    )
    direction: Literal["minimize", "maximize"] | None = Field(
        None, description="Default: minimize for metrics named *loss*/perplexity, maximize otherwise."
    )
    pruner: Literal["median", "asha", "none"] = Field(
        "median", description="Stop bad trials early from their validation loss (every training.eval_every steps)."
    )
    startup_trials: int = Field(2, ge=0, description="Median pruner: finished trials before any trial is pruned.")
    warmup_steps: int = Field(0, ge=0, description="Median pruner: steps of each trial before it can be pruned.")
    sampler: Literal["tpe", "random"] = Field("tpe", description="How the next trial's values are chosen.")
    seed: int = Field(0, description="Sampler seed.")
    enqueue: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Trials to run first, e.g. [{training.learning_rate: 2e-4}] (a known baseline).",
    )
    keep_models: Literal["best", "all"] = Field(
        "best", description="best: delete every other trial's model folder once the sweep is done (saves space)."
    )
    heartbeat_interval: int = Field(
        30, gt=0, description="--storage URL: seconds between a running trial's heartbeats in the shared database."
    )
    grace_period: int = Field(
        120,
        gt=0,
        description="--storage URL: a running trial with no heartbeat for this many seconds is failed (its worker "
        "died) and its values are tried once more by another worker.",
    )

    @model_validator(mode="after")
    def _check_heartbeat(self) -> SweepConfig:
        if self.grace_period <= self.heartbeat_interval:
            raise ValueError(
                f"grace_period ({self.grace_period}) must be longer than heartbeat_interval "
                f"({self.heartbeat_interval}), or live trials would be failed between two heartbeats"
            )
        return self


STAGE_SECTIONS = ("task", "data", "method", "training", "eval")


class StageConfig(Section):
    """One stage of a sequential run: overrides of the shared sections, trained from the previous stage's model."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Stage name (its folder: stages/N-name).")
    replay: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Fraction of this stage's training rows drawn from earlier stages' training data (limits "
        "forgetting); the earlier rows must be data this stage's task can train on.",
    )
    task: dict[str, Any] | None = Field(None, description="Overrides of task for this stage (e.g. {name: lm}).")
    data: dict[str, Any] | None = Field(None, description="Overrides of data for this stage.")
    method: dict[str, Any] | None = Field(None, description="Overrides of method (a new method.name replaces it).")
    training: dict[str, Any] | None = Field(None, description="Overrides of training for this stage.")
    eval: dict[str, Any] | None = Field(None, description="Overrides of eval for this stage.")


class RunConfig(Section):
    """A whole run: what to train, on what, how, and where to put it."""

    model: ModelConfig
    data: DataConfig
    task: TaskConfig = Field(default_factory=TaskConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    stages: list[StageConfig] = Field(
        default_factory=list,
        description="Sequential fine-tuning: stages run in order, each starting from the previous stage's model "
        "(e.g. lm on domain text, then sft). The sections above are shared; each stage overrides some of them.",
    )

    @model_serializer(mode="wrap")
    def _dump_stages_if_any(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        dumped = handler(self)
        if not dumped.get("stages"):
            dumped.pop("stages", None)
        return dumped

    @model_validator(mode="before")
    @classmethod
    def _final_stage_data(cls, raw: Any) -> Any:
        # With stages, data may be given per stage only: the top level then describes the final stage's data.
        if isinstance(raw, dict) and raw.get("stages") and "data" not in raw:
            last = raw["stages"][-1]
            if isinstance(last, dict) and isinstance(last.get("data"), dict):
                raw = {**raw, "data": last["data"]}
        return raw

    @model_validator(mode="after")
    def _check_combinations(self) -> RunConfig:
        names = [self.data.name, *(entry.name for entry in self.data.mix)]
        if len(set(names)) < len(names):
            raise ValueError(f"data.name and data.mix[].name must all differ; got {names}")
        if self.multihead and self.method.name != "full":
            raise ValueError(
                f"data.mix gives tasks their own heads (a shared backbone), which trains with method.name: full; "
                f"got '{self.method.name}'"
            )
        has_validation = bool(self.data.validation) or self.data.validation_fraction > 0
        if self.training.early_stopping_patience and not self.training.eval_every:
            raise ValueError(
                "training.early_stopping_patience needs validation loss; set training.eval_every (and validation data)"
            )
        if self.training.scheduler == "reduce_on_plateau" and not self.training.eval_every:
            raise ValueError(
                "training.scheduler=reduce_on_plateau follows the validation loss; set training.eval_every "
                "(and validation data)"
            )
        if self.training.eval_every and not has_validation:
            raise ValueError(
                "training.eval_every is set but there is no validation data; "
                "set data.validation or data.validation_fraction, or remove training.eval_every"
            )
        if self.eval.enabled and not (self.data.test or self.data.test_fraction > 0):
            raise ValueError(
                "eval.enabled is true but data.test is not set; set data.test (or data.test_fraction) "
                "or eval.enabled=false"
            )
        ungraded = ("tag", "lm", "reward", "dpo", "orpo", "simpo", "kto")
        if self.eval.graders and self.task.name in ungraded:
            raise ValueError(
                f"eval.graders grade generated answers, which a '{self.task.name}' run's evaluation does not produce; "
                "graders work with sft, classify, seq2seq, qa, ppo and grpo runs"
            )
        graders = {g.name for g in self.eval.graders}
        for source in self.task.rl.reward:
            if source.startswith("grader:") and source.removeprefix("grader:") not in graders:
                known = ", ".join(sorted(graders)) or "none"
                raise ValueError(f"task.rl.reward: {source!r} names no grader of eval.graders ({known})")
        qa = self.task.qa
        if self.task.name == "qa" and qa.doc_stride + qa.max_question_len + 4 >= self.training.max_seq_len:
            raise ValueError(
                f"task.qa.doc_stride ({qa.doc_stride}) + task.qa.max_question_len ({qa.max_question_len}) leave no "
                f"new context in windows of training.max_seq_len={self.training.max_seq_len} tokens; lower them "
                "(e.g. doc_stride 128 with max_seq_len 384)"
            )
        return self

    @property
    def multihead(self) -> bool:
        """Whether a data mix gives some dataset a task of its own (one backbone, a head per task)."""
        return any(entry.task is not None and entry.task.name != self.task.name for entry in self.data.mix)

    @property
    def run_dir(self) -> Path:
        return Path(self.output.dir) / (self.output.name or "run")

    def to_yaml(self) -> str:
        return yaml.dump(self.model_dump(mode="json"), Dumper=_BlockDumper, sort_keys=False, allow_unicode=True)


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line strings (prompt templates) as readable ``|`` blocks."""


_BlockDumper.add_representer(
    str,
    lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None),
)
