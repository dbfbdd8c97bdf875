"""The run configuration: one pydantic schema, the only place a setting is defined.

A run YAML has the sections ``model``, ``data``, ``task``, ``method``, ``training``, ``eval`` and
``output``. Every problem (unknown key, wrong type, impossible combination) is reported before any work
starts, naming the key, the value and what is allowed.
"""

from __future__ import annotations

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
        return self


class TaskConfig(Section):
    name: Literal["sft"] = Field("sft", description="Recipe: sft (chat / instruction tuning).")
    train_on: Literal["assistant", "all"] = Field(
        "assistant", description="Which tokens carry loss: assistant replies only, or every token."
    )
    system_prompt: str | None = Field(None, description="System message added to rows that have none.")


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
    scheduler: Literal["linear", "cosine", "constant", "warmup-stable-decay"] = Field(
        "cosine", description="LR schedule after warm-up; warmup-stable-decay holds the peak, then decays (cosine)."
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


class EvalConfig(Section):
    enabled: bool = Field(True, description="Evaluate base and tuned model on data.test after training.")
    baseline: bool = Field(True, description="Also evaluate the base model on the same rows.")
    max_new_tokens: int = Field(32, gt=0, description="Greedy generation length for sft predictions.")
    batch_size: int = Field(16, gt=0)
    bootstrap_samples: int = Field(1000, ge=100, description="Resamples for the 95% confidence interval of each delta.")
    few_shot: int = Field(
        3, ge=0, description="Also evaluate the base model with this many training examples in context (0: off)."
    )
    forgetting: bool = Field(True, description="Perplexity of base and tuned model on held-out general chat text.")
    forgetting_rows: int = Field(24, gt=0, le=48, description="How many of the 48 shipped general-chat rows to use.")
    forgetting_warn_pct: float = Field(10.0, gt=0, description="Warn when perplexity rises by more than this (%).")
    bias_probe: bool = Field(True, description="Swap gendered and identity terms in test inputs; report answer flips.")


class OutputConfig(Section):
    dir: str = Field("runs", description="Parent folder of run directories (relative to the working directory).")
    name: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Run name; defaults to the config file's stem."
    )


class RunConfig(Section):
    """A whole run: what to train, on what, how, and where to put it."""

    model: ModelConfig
    data: DataConfig
    task: TaskConfig = Field(default_factory=TaskConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)

    @model_validator(mode="after")
    def _check_combinations(self) -> RunConfig:
        has_validation = bool(self.data.validation) or self.data.validation_fraction > 0
        if self.training.early_stopping_patience and not self.training.eval_every:
            raise ValueError(
                "training.early_stopping_patience needs validation loss; set training.eval_every (and validation data)"
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
        return self

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
    """Read a run YAML, apply ``key.path=value`` overrides and validate; raise ConfigError on any problem."""
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
    return validate_config(raw, source=str(path))


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
    data = raw.get("data")
    if not isinstance(data, dict):
        return
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
