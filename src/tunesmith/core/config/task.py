"""The ``task`` section: the recipe (``task.name``) and the settings sections each task reads."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from tunesmith.core.config.base import Section

TaskName = Literal[
    "sft", "classify", "tag", "seq2seq", "qa", "lm", "dpo", "orpo", "simpo", "kto", "reward", "ppo", "grpo"
]


class PreferenceConfig(Section):
    """Settings of the preference tasks dpo / orpo / simpo / kto (``task.preference``)."""

    loss: Literal["sigmoid", "ipo", "hinge"] = Field(
        "sigmoid", description="dpo only: sigmoid (DPO), ipo (IPO, squared loss on length-averaged log-ratios), hinge."
    )
    beta: float | None = Field(
        None,
        gt=0,
        description="Strength: DPO/IPO/hinge/KTO temperature (default 0.1), ORPO odds-ratio weight lambda (0.1), "
        "SimPO reward scale (2.0); null: the task's default.",
    )
    label_smoothing: float = Field(
        0.0, ge=0.0, lt=0.5, description="dpo sigmoid / simpo: probability that a pair's labels are flipped (cDPO)."
    )
    gamma: float = Field(0.5, ge=0.0, description="simpo: target reward margin.")
    desirable_weight: float = Field(1.0, gt=0, description="kto: weight of the loss on desirable (thumbs-up) replies.")
    undesirable_weight: float = Field(
        1.0, gt=0, description="kto: weight of the loss on undesirable (thumbs-down) replies."
    )

    def beta_for(self, task: str) -> float:
        """The configured beta, or the task's customary default."""
        return self.beta if self.beta is not None else {"simpo": 2.0}.get(task, 0.1)


class RlConfig(Section):
    """Settings of the reinforcement-learning tasks ppo / grpo (``task.rl``)."""

    reward: list[str] = Field(
        default_factory=list,
        description="Reward sources, summed (weighted by reward_weights): a reward-model run directory "
        "(task: reward), a Python callable 'module:function' (called as fn(prompts, completions, references) -> "
        "list of floats), grader:<name> (a grader of eval.graders, OpenAI's grader JSON), or a built-in: "
        "exact_match, contains_reference, format, length.",
    )
    reward_weights: list[float] | None = Field(None, description="One weight per reward source; null: all 1.")
    format_pattern: str = Field(
        r"(?s).*\S.*", description="format reward: a completion scores 1 when this regex matches it in full."
    )
    target_length: int = Field(64, gt=0, description="length reward: the ideal completion length in characters.")
    num_generations: int = Field(4, ge=1, description="Completions sampled per prompt (grpo: the group size G).")
    max_new_tokens: int = Field(32, gt=0, description="Longest sampled completion (tokens).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of rollouts.")
    top_k: int | None = Field(None, gt=0, description="Sample only among the k most likely tokens; null: all.")
    kl_coef: float = Field(0.05, ge=0, description="KL penalty to the reference (ppo: initial coefficient).")
    adaptive_kl: bool = Field(True, description="ppo: adapt the KL coefficient towards target_kl (Ziegler et al.).")
    target_kl: float = Field(6.0, gt=0, description="ppo: the KL (nats per completion) the controller aims for.")
    kl_horizon: int = Field(10000, gt=0, description="ppo: adaptive KL controller horizon (samples).")
    clip_range: float = Field(0.2, gt=0, description="Policy ratio clip epsilon.")
    value_clip_range: float = Field(0.2, gt=0, description="ppo: value prediction clip.")
    value_coef: float = Field(0.1, ge=0, description="ppo: weight of the value loss.")
    gamma: float = Field(1.0, gt=0, le=1, description="ppo: discount.")
    lam: float = Field(0.95, ge=0, le=1, description="ppo: GAE lambda.")
    update_epochs: int = Field(2, ge=1, description="Optimisation passes over each batch of rollouts.")


class ClassifyConfig(Section):
    """Settings of the ``classify`` task (``task.classify``)."""

    head: Literal["sequence", "generation"] = Field(
        "sequence",
        description="sequence: a classification head on the model's final hidden state (encoders such as BERT, "
        "or decoder LLMs: AutoModelForSequenceClassification); generation: a chat model answers with the label word, "
        "and predictions pick the label whose whole word sequence is most likely after the prompt.",
    )
    prompt: str | None = Field(
        None,
        description="generation: the user message built from a row, with {text} (and {text_pair}), e.g. "
        "'Is this review positive or negative?\\n\\n{text}'; null: the text itself.",
    )
    label_separator: str | None = Field(
        None,
        description="Keep only the part of each label before this separator, e.g. ':' turns TREC's 'NUM:dist' "
        "into the coarse class 'NUM'.",
    )

    @model_validator(mode="after")
    def _check_prompt(self) -> ClassifyConfig:
        if self.prompt is not None and self.head != "generation":
            raise ValueError("task.classify.prompt is used only with task.classify.head: generation")
        if self.prompt is not None and "{text}" not in self.prompt:
            raise ValueError(f"task.classify.prompt {self.prompt!r} has no {{text}} placeholder")
        return self


class Seq2SeqConfig(Section):
    """Settings of the ``seq2seq`` task (``task.seq2seq``): encoder-decoder text-to-text (T5, BART)."""

    prefix: str = Field(
        "", description="Text put before every source, e.g. 'summarize: ' or 'translate English to German: ' (T5)."
    )
    max_target_len: int = Field(
        128, gt=0, description="Targets are truncated to this many tokens in training (sources: training.max_seq_len)."
    )
    num_beams: int = Field(1, gt=0, description="Beam search width for predictions (1: greedy).")


class LmConfig(Section):
    """Settings of the ``lm`` task (``task.lm``): continued pre-training on raw text."""

    isolate_documents: bool = Field(
        True,
        description="Packed rows: each document attends only to itself (block-diagonal mask, positions restart); "
        "false: plain causal attention over the whole row, as most pre-training does.",
    )


class QaConfig(Section):
    """Settings of the extractive ``qa`` task (``task.qa``); token counts are the model tokenizer's."""

    doc_stride: int = Field(
        128, gt=0, description="Tokens shared by consecutive windows when a context is longer than max_seq_len."
    )
    max_answer_len: int = Field(30, gt=0, description="Longest answer span considered, in tokens.")
    n_best: int = Field(20, gt=0, description="Start and end candidates kept per window when choosing the span.")
    max_question_len: int = Field(64, gt=0, description="Questions are cut to this many tokens (counted).")


class TaskConfig(Section):
    name: TaskName = Field(
        "sft",
        description="Recipe: sft (chat / instruction tuning), classify (task head), tag (NER), seq2seq "
        "(encoder-decoder), qa (extractive), lm (continued pre-training), dpo / orpo / simpo / kto (preference), "
        "reward (reward model), ppo / grpo (reinforcement learning).",
    )
    train_on: Literal["assistant", "all"] = Field(
        "assistant", description="Which tokens carry loss: assistant replies only, or every token."
    )
    system_prompt: str | None = Field(None, description="System message added to rows that have none.")
    classify: ClassifyConfig = Field(default_factory=ClassifyConfig, description="Settings of the classify task.")
    preference: PreferenceConfig = Field(
        default_factory=PreferenceConfig, description="Settings of the dpo / orpo / simpo / kto tasks."
    )
    rl: RlConfig = Field(default_factory=RlConfig, description="Settings of the ppo / grpo tasks.")
    seq2seq: Seq2SeqConfig = Field(default_factory=Seq2SeqConfig, description="Settings of the seq2seq task.")
    lm: LmConfig = Field(default_factory=LmConfig, description="Settings of the lm task.")
    qa: QaConfig = Field(default_factory=QaConfig, description="Settings of the extractive qa task.")

    def used_sections(self) -> set[str]:
        """The settings sections the chosen task reads."""
        return {section for section, tasks in TASK_SECTIONS.items() if self.name in tasks}

    @model_serializer(mode="wrap")
    def _dump_used_sections(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Like method: the resolved config.yaml names only the settings the task reads.
        return {k: v for k, v in handler(self).items() if k not in TASK_SECTIONS or k in self.used_sections()}

    @model_validator(mode="after")
    def _check_sections(self) -> TaskConfig:
        for section in sorted((self.model_fields_set & set(TASK_SECTIONS)) - self.used_sections()):
            raise ValueError(
                f"task.{section} is set but task.name is '{self.name}', which does not read it; remove task.{section} "
                f"or use a task that does ({', '.join(TASK_SECTIONS[section])})"
            )
        return self


# The settings sections of TaskConfig and the tasks that read each.
TASK_SECTIONS: dict[str, tuple[str, ...]] = {
    "classify": ("classify",),
    "preference": ("dpo", "orpo", "simpo", "kto"),
    "rl": ("ppo", "grpo"),
    "seq2seq": ("seq2seq",),
    "lm": ("lm",),
    "qa": ("qa",),
}
