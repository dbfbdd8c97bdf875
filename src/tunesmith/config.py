"""The run configuration: one pydantic schema, the only place a setting is defined.

A run YAML has the sections ``model``, ``data``, ``task``, ``method``, ``training``, ``eval`` and
``output``. Every problem (unknown key, wrong type, impossible combination) is reported before any work
starts, naming the key, the value and what is allowed.
"""

from __future__ import annotations

import copy
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal

import annotated_types
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from tunesmith.errors import ConfigError

DATA_PATH_KEYS = ("train", "validation", "test")


class Section(BaseModel):
    """Base for every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Section):
    name: str = Field(description="Alias (smollm2-135m, minilm-l6), Hugging Face hub id, local folder or .gguf file.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    trust_remote_code: bool = Field(False, description="Run model code shipped with a hub repo. Off unless asked.")
    from_run: str | None = Field(
        None,
        description="Continual learning: start from this earlier run's tuned model (its run directory; the same "
        "base model and method), e.g. set by `tunesmith run CONFIG --from runs/NAME`.",
    )


DataFormat = Literal[
    "auto",
    "messages",
    "sharegpt",
    "openai_preference",
    "preference",
    "feedback",
    "prompt_completion",
    "alpaca",
    "squad",
    "pair",
    "tagged",
    "labeled",
    "text",
    "template",
]
FileReader = Literal["auto", "jsonl", "json", "csv", "tsv", "parquet", "conll", "label", "txt"]


class CleanConfig(Section):
    unicode: Literal["NFC", "NFKC", "none"] = Field("NFC", description="Unicode normalisation form, or none.")
    control_chars: bool = Field(True, description="Remove control characters (tab and newline are kept).")
    whitespace: bool = Field(
        True, description="CRLF to LF, trailing spaces, runs of blank lines, leading/trailing blanks."
    )
    strip_html: bool = Field(False, description="Keep only the visible text of HTML markup.")
    min_chars: int = Field(0, ge=0, description="Drop rows whose text (all fields) is shorter than this.")
    max_chars: int | None = Field(None, gt=0, description="Drop rows whose text (all fields) is longer than this.")
    min_tokens: int = Field(
        0, ge=0, description="Drop rows shorter than this many tokens (the model's tokenizer, with its chat template)."
    )
    max_tokens: int | None = Field(
        None,
        gt=0,
        description="Drop rows longer than this many tokens (the model's tokenizer, with its chat template).",
    )
    repeated_lines: bool = Field(
        False, description="Raw text rows: remove later copies of a line inside the same document."
    )
    boilerplate_min_docs: int | None = Field(
        None,
        ge=2,
        description="Raw text rows: remove lines found in at least this many documents (headers, footers, menus).",
    )
    languages: list[str] = Field(
        default_factory=list,
        description="Keep only rows detected (offline, py3langid) as one of these ISO 639-1 codes, e.g. [en]; "
        "rows under 20 characters are kept unjudged. Empty: no language filter.",
    )


class PiiConfig(Section):
    mode: Literal["off", "report", "redact"] = Field(
        "report",
        description="report: count emails, phones, cards, IPs, IBANs and secrets; redact: also replace them "
        "with typed placeholders such as <EMAIL>.",
    )
    phone_region: str = Field("US", description="Region for phone numbers written without a +country code.")


class DedupConfig(Section):
    exact: bool = Field(True, description="Drop training rows whose normalised text repeats an earlier row.")
    near: bool = Field(True, description="Also drop near duplicates (MinHash LSH over character 5-grams).")
    threshold: float = Field(0.8, gt=0.0, le=1.0, description="Jaccard similarity at which rows are near duplicates.")
    num_perm: int = Field(128, ge=16, description="MinHash permutations (more: more accurate, slower).")
    across_splits: bool = Field(
        True, description="Drop training (and validation) rows that leak test rows; test is never changed."
    )

    @model_validator(mode="after")
    def _check_near(self) -> DedupConfig:
        if self.near and not self.exact:
            raise ValueError(
                "data.dedup.exact is false but data.dedup.near is true; near duplicates are searched after exact "
                "ones, so set data.dedup.near: false too"
            )
        return self


AugmentOp = Literal["swap", "delete", "insert", "synonym", "back_translate"]


class AugmentConfig(Section):
    """Classification augmentation (EDA-style word operations, back-translation): training rows only."""

    copies: int = Field(
        0, ge=0, description="Augmented copies added per labelled training row (0: augmentation off, the default)."
    )
    ops: list[AugmentOp] = Field(
        ["swap", "delete", "insert"],
        min_length=1,
        description="Operations drawn at random for each copy: swap / delete / insert words, synonym (needs "
        "synonyms), back_translate (needs translate_to and translate_back).",
    )
    rate: float = Field(0.1, gt=0.0, le=0.5, description="Fraction of a row's words one operation changes (>= 1).")
    synonyms: str | None = Field(
        None, description="Offline lexicon for synonym and insert: a JSON file {word: [synonyms]} or TSV word<TAB>syn."
    )
    translate_to: str | None = Field(None, description="Translation model (hub id or folder) into a pivot language.")
    translate_back: str | None = Field(None, description="Translation model from the pivot language back.")

    @model_validator(mode="after")
    def _check_resources(self) -> AugmentConfig:
        if "synonym" in self.ops and not self.synonyms:
            raise ValueError("data.augment.ops has 'synonym' but data.augment.synonyms (a lexicon file) is not set")
        if "back_translate" in self.ops and not (self.translate_to and self.translate_back):
            raise ValueError(
                "data.augment.ops has 'back_translate' but data.augment.translate_to / translate_back are not set"
            )
        return self


class ParallelFiles(Section):
    """Two line-aligned text files (a sentence and its translation on the same line), read as source/target."""

    source: str = Field(description="One source text per line.")
    target: str = Field(description="The matching target text on the same line.")

    def __fspath__(self) -> str:
        # Where a single path is expected (a file name to show, the folder holding SOURCE.md), the source file.
        return self.source


class DataConfig(Section):
    train: str | ParallelFiles = Field(
        description="Training data: a file (JSONL, JSON, CSV, TSV, Parquet, CoNLL, .label, .txt, optionally .gz), "
        "a folder (.txt/.md files or a saved Hugging Face dataset), hf:NAME?name=CONFIG&split=SPLIT, or "
        "{source: FILE, target: FILE} for line-aligned parallel text. "
        "Relative paths are relative to the config file."
    )
    validation: str | ParallelFiles | None = Field(
        None, description="Validation file; or carve one out with validation_fraction."
    )
    test: str | ParallelFiles | None = Field(
        None, description="Test file used by evaluation; or carve one out with test_fraction."
    )
    format: DataFormat = Field(
        "auto",
        description="Row format; auto detects it from the columns (or template if prompt_template is set).",
    )
    reader: FileReader = Field("auto", description="How to read the files; auto goes by the file name.")
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Map of the format's column names to the file's, e.g. {text: review, label: stars}.",
    )
    prompt_template: str | None = Field(
        None, description="Python format string over a row's columns, e.g. 'Review: {sentence}'."
    )
    completion_template: str = Field("{completion}", description="Format string for the target (template format).")
    label_column: str = Field("label", description="Column whose values label_names maps to words.")
    label_names: dict[str, str] = Field(
        default_factory=dict, description="Map of label values to words, e.g. {0: negative}."
    )
    train_rows: int | None = Field(None, gt=0, description="Use at most this many training rows.")
    train_sample: Literal["random", "first"] = Field(
        "random", description="How train_rows picks rows (seeded by training.seed)."
    )
    validation_rows: int | None = Field(None, gt=0, description="Use the first N validation rows.")
    validation_fraction: float = Field(
        0.0, ge=0.0, lt=1.0, description="Fraction of train held out when no validation file (hash-based, seeded)."
    )
    test_fraction: float = Field(
        0.0, ge=0.0, lt=1.0, description="Fraction of train held out as test when no test file (hash-based, seeded)."
    )
    stratify: bool = Field(
        True, description="Hold out the same fraction of every label (exact per label); false: each row by its hash."
    )
    test_rows: int | None = Field(None, gt=0, description="Use the first N test rows (a fixed slice).")
    clean: CleanConfig = Field(default_factory=CleanConfig)
    pii: PiiConfig = Field(default_factory=PiiConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    audit: bool = Field(
        False,
        description="During prepare, audit the training file (likely label errors, clusters, outliers, duplicates; "
        "as `tunesmith data audit`, with minilm-l6) into data/audit.json; the report shows it.",
    )
    replay: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="With model.from_run: this fraction of the training split is drawn from the earlier run's "
        "training rows (replay, to limit forgetting); e.g. 0.1.",
    )
    name: str = Field(
        "main", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Name of this dataset's task in a data mix."
    )
    weight: float = Field(1.0, gt=0, description="Sampling weight of this dataset in a data mix (see mix).")
    mix: list[MixConfig] = Field(
        default_factory=list,
        description="Multi-task training: more datasets (each with name, weight and its own settings) mixed into "
        "the training split in proportion to their weights; each task's test split is evaluated on its own.",
    )

    @property
    def labels(self) -> list[str] | None:
        """The label words answers are scored against (label_names' values, in order), or None for free text."""
        return list(dict.fromkeys(self.label_names.values())) or None

    @field_validator("label_names", mode="before")
    @classmethod
    def _label_keys_as_text(cls, value: Any) -> Any:
        # YAML reads `{0: negative}` with an int key; labels in files are compared as text.
        return {str(k): v for k, v in value.items()} if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _check_format(self) -> DataConfig:
        if self.format == "template" and not self.prompt_template:
            raise ValueError("data.format is 'template' but data.prompt_template is not set")
        if self.validation and self.validation_fraction > 0:
            raise ValueError("set either data.validation (a file) or data.validation_fraction, not both")
        if self.test and self.test_fraction > 0:
            raise ValueError("set either data.test (a file) or data.test_fraction, not both")
        if self.validation_fraction + self.test_fraction >= 1:
            raise ValueError("data.validation_fraction + data.test_fraction must leave some rows for training")
        if self.clean.max_chars is not None and self.clean.max_chars <= self.clean.min_chars:
            raise ValueError("data.clean.max_chars must be greater than data.clean.min_chars")
        if self.clean.max_tokens is not None and self.clean.max_tokens <= self.clean.min_tokens:
            raise ValueError("data.clean.max_tokens must be greater than data.clean.min_tokens")
        return self


class MixConfig(DataConfig):
    """One more dataset of a multi-task mix: its own files and settings, a task name and a sampling weight."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Task name (its eval-<name>/ folder).")
    system_prompt: str | None = Field(
        None, description="System message (task instruction) added to this dataset's rows, e.g. 'Classify the topic.'"
    )
    task: TaskConfig | None = Field(
        None,
        description="This dataset's own task, e.g. {name: tag}: the run then trains one shared backbone with a head "
        "per task (head tasks only; method full). Default: the run's task (text-to-text multi-task).",
    )

    @model_validator(mode="after")
    def _check_flat(self) -> MixConfig:
        if self.mix:
            raise ValueError("data.mix entries cannot have a mix of their own")
        if self.replay:
            raise ValueError("data.mix entries cannot set replay; set it on data")
        return self


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
        "list of floats), or a built-in: exact_match, contains_reference, format, length.",
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


class LoraConfig(Section):
    r: int = Field(16, gt=0, description="Adapter rank.")
    alpha: float = Field(32.0, gt=0, description="Scaling numerator (scale = alpha / r; alpha / sqrt(r) with rslora).")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the adapter input.")
    target_modules: str | list[str] = Field("all-linear", description="'all-linear' or a list of module names.")
    dora: bool = Field(False, description="DoRA: split each weight into magnitude and direction; LoRA the direction.")
    rslora: bool = Field(False, description="Rank-stabilised LoRA: scale by alpha / sqrt(r), steadier at high ranks.")


class QloraConfig(Section):
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type of the frozen base weights.")
    double_quant: bool = Field(True, description="Also quantise the quantisation constants (saves ~0.4 bit/weight).")


class FreezeConfig(Section):
    train_layers: int = Field(2, ge=0, description="Train only the top N decoder layers; all others stay frozen.")
    train_head: bool = Field(True, description="Also train the output head (LM head or task head).")

    @model_validator(mode="after")
    def _check_something_trains(self) -> FreezeConfig:
        if self.train_layers == 0 and not self.train_head:
            raise ValueError("method.freeze trains nothing; set train_layers above 0 or train_head: true")
        return self


class PrefixConfig(Section):
    num_virtual_tokens: int = Field(20, gt=0, description="Trained key/value vectors prepended in every layer.")


class PromptConfig(Section):
    num_virtual_tokens: int = Field(20, gt=0, description="Trained embeddings prepended to the input.")
    init_text: str | None = Field(
        None,
        description="Initialise the virtual tokens from this text's token embeddings (repeated to fit); null: random.",
    )


class Ia3Config(Section):
    target_modules: list[str] | None = Field(
        None, description="Modules whose activations are rescaled; null: peft's default for the architecture."
    )
    feedforward_modules: list[str] | None = Field(
        None, description="Which of target_modules are feed-forward (scaled on the input); null: peft's default."
    )

    @model_validator(mode="after")
    def _check_modules(self) -> Ia3Config:
        if (self.target_modules is None) != (self.feedforward_modules is None):
            raise ValueError("method.ia3: set both target_modules and feedforward_modules, or neither")
        if self.target_modules is not None and not set(self.feedforward_modules or []) <= set(self.target_modules):
            raise ValueError("method.ia3.feedforward_modules must be a subset of method.ia3.target_modules")
        return self


class AdapterConfig(Section):
    size: int = Field(64, gt=0, description="Bottleneck width of each adapter (down-projection size).")
    target_modules: list[str] = Field(
        ["o_proj", "down_proj"],
        min_length=1,
        description="Modules after whose output an adapter is added (residual): attention and feed-forward "
        "output projections (Llama: o_proj, down_proj; GPT-2: c_proj).",
    )


class PruneConfig(Section):
    layers: int = Field(1, gt=0, description="Decoder layers to drop (those that change the hidden state least).")
    calibration_rows: int = Field(16, gt=0, description="Training rows used to measure each layer's effect.")
    then: Literal["lora", "full"] = Field("lora", description="How the pruned model is fine-tuned.")


MethodName = Literal["full", "freeze", "lora", "qlora", "prefix", "prompt", "ia3", "adapter", "prune"]
# The settings sections each method reads; setting any other section is an error.
METHOD_SECTIONS: dict[str, tuple[str, ...]] = {
    "full": (),
    "freeze": ("freeze",),
    "lora": ("lora",),
    "qlora": ("lora", "qlora"),
    "prefix": ("prefix",),
    "prompt": ("prompt",),
    "ia3": ("ia3",),
    "adapter": ("adapter",),
    "prune": ("prune", "lora"),
}


class MethodConfig(Section):
    name: MethodName = Field(
        "lora",
        description="full: every weight; freeze: top layers and/or head; lora (dora/rslora options); "
        "qlora: LoRA on a 4-bit base (GPU); prefix / prompt: prefix or prompt tuning; ia3: learned rescaling; "
        "adapter: bottleneck adapter layers; prune: drop layers, then lora or full.",
    )
    lora: LoraConfig = Field(default_factory=LoraConfig)
    qlora: QloraConfig = Field(default_factory=QloraConfig)
    freeze: FreezeConfig = Field(default_factory=FreezeConfig)
    prefix: PrefixConfig = Field(default_factory=PrefixConfig)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    ia3: Ia3Config = Field(default_factory=Ia3Config)
    adapter: AdapterConfig = Field(default_factory=AdapterConfig)
    prune: PruneConfig = Field(default_factory=PruneConfig)

    def used_sections(self) -> set[str]:
        """The settings sections the chosen method reads."""
        used = set(METHOD_SECTIONS[self.name])
        if self.name == "prune" and self.prune.then != "lora":
            used.discard("lora")
        return used

    @model_serializer(mode="wrap")
    def _dump_used_sections(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # The resolved config.yaml names only what the method reads, so it validates again when read back.
        return {k: v for k, v in handler(self).items() if k == "name" or k in self.used_sections()}

    @model_validator(mode="after")
    def _check_sections(self) -> MethodConfig:
        for section in sorted(self.model_fields_set - {"name"} - self.used_sections()):
            raise ValueError(
                f"method.{section} is set but method.name is '{self.name}'; "
                f"remove method.{section} or use name: {section}"
            )
        return self


class TrainingConfig(Section):
    epochs: float = Field(1.0, gt=0, description="Passes over the training data (fractions allowed).")
    max_steps: int | None = Field(None, gt=0, description="Stop after this many optimizer steps (overrides epochs).")
    batch_size: int = Field(8, gt=0, description="Examples per micro-batch, per process.")
    grad_accum: int = Field(1, gt=0, description="Micro-batches per optimizer step.")
    learning_rate: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0, description="Fraction of steps spent warming up the LR.")
    scheduler: Literal["linear", "cosine", "constant", "warmup-stable-decay", "reduce_on_plateau"] = Field(
        "cosine",
        description="LR schedule after warm-up; warmup-stable-decay holds the peak, then decays (cosine); "
        "reduce_on_plateau multiplies the LR by plateau_factor when the validation loss stops improving "
        "(needs eval_every).",
    )
    plateau_factor: float = Field(0.5, gt=0.0, lt=1.0, description="reduce_on_plateau: LR multiplier on a plateau.")
    plateau_patience: int = Field(
        0, ge=0, description="reduce_on_plateau: evaluations without improvement tolerated before the LR drops."
    )
    decay_ratio: float = Field(
        0.1, gt=0.0, le=1.0, description="warmup-stable-decay: fraction of steps spent decaying at the end."
    )
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="Label smoothing of the cross-entropy loss.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: less memory, about 30% more time."
    )
    neftune_alpha: float | None = Field(
        None,
        gt=0,
        description="NEFTune: uniform noise of scale alpha / sqrt(row length x hidden size) on the input "
        "embeddings while training (5 is the paper's usual value); null disables.",
    )
    early_stopping_patience: int | None = Field(
        None,
        gt=0,
        description="Stop when the validation loss has not improved for N evaluations (needs eval_every); "
        "the best weights are kept and restored at the end.",
    )
    max_grad_norm: float | None = Field(1.0, gt=0, description="Clip gradients to this norm; null disables.")
    max_seq_len: int = Field(
        512, gt=0, description="Longer examples are truncated (and counted); also the length of a packed row."
    )
    packing: bool = Field(
        True,
        description="Pack each micro-batch's examples into rows of up to max_seq_len tokens, isolated by a "
        "block-diagonal attention mask (no padding compute); false pads each example to the batch's longest.",
    )
    eval_every: int | None = Field(None, gt=0, description="Validation loss every N optimizer steps.")
    log_every: int = Field(1, gt=0, description="Write metrics.jsonl every N optimizer steps.")
    save_every: int | None = Field(
        None, gt=0, description="Save a checkpoint (weights, optimizer, scheduler, RNG, step) every N steps."
    )
    keep_checkpoints: int = Field(2, gt=0, description="Keep only the newest K checkpoints.")
    max_bad_steps: int = Field(
        10, ge=0, description="Steps with a non-finite loss or gradient are skipped; stop after more than this many."
    )
    seed: int = Field(42)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 autocast on GPUs that support it, fp32 on CPU."
    )
    micro_batch_size: int | Literal["auto"] | None = Field(
        None,
        description="Run each micro-batch in pieces of at most this many examples: less memory, the same result "
        "(the loss is normalised over the whole step). auto: the largest piece that fits in GPU memory, found by "
        "trying the step's longest examples. null: batch_size on a GPU; on a CPU, one packed row at a time (no "
        "padding compute and a fraction of the memory; CPUs gain nothing from batching rows).",
    )
    dropout: float | None = Field(
        None, ge=0.0, lt=1.0, description="Override the model's dropout probabilities (attention, hidden, ...)."
    )
    compile: bool = Field(
        False, description="torch.compile each decoder layer: faster steps on GPUs after a warm-up (minutes)."
    )
    attention: Literal["auto", "sdpa", "eager", "flex_attention"] = Field(
        "auto",
        description="Attention implementation while training. auto: flex_attention on CUDA GPUs when packing "
        "(each example attends only to itself, skipped blocks cost nothing), else the model's (sdpa).",
    )
    liger: bool | None = Field(
        None,
        description="liger-kernel Triton kernels (RMSNorm, RoPE, SwiGLU, fused linear cross-entropy) on CUDA GPUs; "
        "null: use them when installed and on CUDA.",
    )
    trackers: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(
        ["tensorboard"],
        description="Experiment trackers fed through accelerate (logs under the run directory; mlflow and wandb "
        "must be installed and configured); [] for none.",
    )


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


# ---------------------------------------------------------------- loading


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a run YAML, apply ``key.path=value`` overrides and validate; raise ConfigError on any problem.

    A ``sweep:`` section (read by ``tunesmith sweep``) is ignored here: a plain run uses the config's own values.
    """
    raw = load_raw_config(path, overrides)
    raw.pop("sweep", None)
    config = validate_config(raw, source=str(path))
    stage_configs(config, source=str(path))  # every stage must be valid before any stage runs
    return config


def stage_configs(config: RunConfig, source: str = "config") -> list[RunConfig]:
    """The full config of each stage: the shared sections with the stage's overrides (no stages of its own).

    A stage's ``data`` replaces the shared one (a stage trains on its own dataset), as does a ``method`` or
    ``task`` with a new name (the shared method's settings mean nothing to another method); ``training`` and
    ``eval`` overrides merge key by key.
    """
    shared = config.model_dump(mode="json", exclude={"stages"})
    configs = []
    for index, stage in enumerate(config.stages):
        raw = copy.deepcopy(shared)
        for section in STAGE_SECTIONS:
            override = getattr(stage, section)
            if override is None:
                continue
            renamed = override.get("name", raw[section].get("name")) != raw[section].get("name")
            if section == "data" or (section in ("method", "task") and renamed):
                raw[section] = copy.deepcopy(override)
            else:
                raw[section] = _deep_merge(raw[section], override)
        raw["output"] = {"dir": str(config.run_dir / "stages"), "name": f"{index + 1}-{stage.name}"}
        configs.append(validate_config(raw, source=f"{source}: stages[{index}] ({stage.name})"))
    return configs


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        nested = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _deep_merge(merged[key], value) if nested else value
    return merged


def load_raw_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """A run YAML as a plain dict, data paths made absolute, overrides applied and output.name set; unvalidated."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if raw is None:
        raise ConfigError(f"{path}: the config file is empty; it needs at least model.name and data.train")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (model, data, ...), got {type(raw).__name__}")
    _resolve_data_paths(raw, base=path.parent)
    for item in overrides:
        apply_override(raw, item)
    output = raw.setdefault("output", {})
    if isinstance(output, dict) and not output.get("name"):
        output["name"] = path.stem
    return raw


def validate_config(raw: dict[str, Any], source: str = "config") -> RunConfig:
    """Validate a plain dict against the schema, turning pydantic's errors into ones a user can act on."""
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        problems = [_describe_error(err) for err in exc.errors()]
        raise ConfigError(f"{source}: invalid configuration\n" + "\n".join(f"  - {p}" for p in problems)) from None


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one ``a.b.c=value`` override in place; the value is parsed as YAML (so 16 is an int)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected key.path=value, e.g. --set training.learning_rate=1e-4")
    parts = key.strip().split(".")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise ConfigError(f"--set {item!r}: {where} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _resolve_data_paths(raw: dict[str, Any], base: Path) -> None:
    """Data paths written in a YAML file are relative to that file, so a config works from any directory."""
    for stage in raw.get("stages") or []:
        if isinstance(stage, dict):
            _resolve_data_paths(stage, base)
    data = raw.get("data")
    if not isinstance(data, dict):
        return
    for entry in data.get("mix") or []:
        if isinstance(entry, dict):
            _resolve_data_paths({"data": entry}, base)
    for key in DATA_PATH_KEYS:
        value = data.get(key)
        if isinstance(value, dict):  # parallel files: {source: ..., target: ...}
            for side in ("source", "target"):
                if isinstance(value.get(side), str) and value[side] and not Path(value[side]).is_absolute():
                    value[side] = str((base / value[side]).resolve())
        elif isinstance(value, str) and value and not value.startswith("hf:") and not Path(value).is_absolute():
            data[key] = str((base / value).resolve())


# ---------------------------------------------------------------- error messages


def _describe_error(err: dict[str, Any]) -> str:
    loc = [str(p) for p in err["loc"]]
    key = ".".join(loc) or "config"
    kind = err["type"]
    if kind == "extra_forbidden":
        section_model, _ = _field_at(loc[:-1])
        known = list(section_model.model_fields) if section_model else []
        hint = difflib.get_close_matches(loc[-1], known, n=1)
        suggestion = f"; did you mean '{'.'.join([*loc[:-1], hint[0]])}'?" if hint else ""
        allowed = f" (allowed: {', '.join(known)})" if known and not hint else ""
        return f"{key}: unknown key{suggestion}{allowed}"
    if kind == "missing":
        return f"{key}: required but not set"
    if kind == "value_error":
        return str(err["msg"]).removeprefix("Value error, ")
    _, field = _field_at(loc)
    expected = _expected(field) if field is not None else None
    if kind == "literal_error" and expected is None:
        expected = str(err.get("ctx", {}).get("expected", ""))
    got = err.get("input")
    hint = ""
    if kind == "literal_error" and isinstance(got, str) and field is not None:
        choices = [str(v) for v in typing.get_args(field.annotation)]
        close = difflib.get_close_matches(got, choices, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"{key}: expected {expected or err['msg'].lower()}, got {got!r}{hint}"


def _field_at(loc: list[str]) -> tuple[type[BaseModel] | None, Any]:
    """Walk the schema along a location; return the section model there and the field info (if a field)."""
    model: type[BaseModel] | None = RunConfig
    field = None
    for part in loc:
        if model is None or part not in model.model_fields:
            return None, None
        field = model.model_fields[part]
        model = _section_type(field.annotation)
    return model, field


def _section_type(annotation: Any) -> type[BaseModel] | None:
    candidates = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _expected(field: Any) -> str:
    """Describe what a field accepts, e.g. 'a positive integer' or "one of 'full', 'lora'"."""
    annotation = field.annotation
    nullable = False
    if _is_union(annotation):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(annotation))
        annotation = args[0] if len(args) == 1 else annotation
    text = _describe_type(annotation, field.metadata)
    return f"{text} or null" if nullable else text


def _describe_type(annotation: Any, metadata: list[Any]) -> str:
    if typing.get_origin(annotation) is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(annotation))
    if _is_union(annotation):
        return " or ".join(_describe_type(a, []) for a in typing.get_args(annotation))
    if annotation is bool:
        return "true or false"
    if annotation in (int, float):
        noun = "integer" if annotation is int else "number"
        lower = next((m for m in metadata if isinstance(m, annotated_types.Gt | annotated_types.Ge)), None)
        upper = next((m for m in metadata if isinstance(m, annotated_types.Lt | annotated_types.Le)), None)
        if lower is not None and upper is not None:
            return f"a {noun} from {_bound(lower)} to {_bound(upper)}"
        if isinstance(lower, annotated_types.Gt) and lower.gt == 0:
            return f"a positive {noun}"
        if isinstance(lower, annotated_types.Ge) and lower.ge == 0:
            return f"a non-negative {noun}"
        return f"an {noun}" if annotation is int else f"a {noun}"
    if annotation is str:
        return "a string"
    origin = typing.get_origin(annotation)
    if origin is list:
        return "a list"
    if origin is dict:
        return "a mapping"
    return getattr(annotation, "__name__", str(annotation))


def _bound(m: Any) -> str:
    for attr, word in (("gt", "above "), ("ge", ""), ("lt", "below "), ("le", "")):
        if hasattr(m, attr):
            return f"{word}{getattr(m, attr)}"
    return str(m)
