"""The ``data`` section: files, format, cleaning, PII, deduplication, augmentation and multi-task mixes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from tunesmith.core.config.base import Section
from tunesmith.core.config.task import TaskConfig

DATA_PATH_KEYS = ("train", "validation", "test")


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
FileReader = Literal["auto", "jsonl", "json", "csv", "tsv", "parquet", "xlsx", "conll", "label", "txt"]
TagScheme = Literal["IOB1", "BIO", "BIOES"]
TAG_SCHEME_ALIASES = {"IOB1": "IOB1", "BIO": "BIO", "IOB2": "BIO", "BIOES": "BIOES", "IOBES": "BIOES"}


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
    header: bool | None = Field(
        None,
        description="CSV/TSV/Excel: whether the first row names the columns. false: columns are numbered from 0 and "
        "data.columns maps by position, e.g. {text: 0, label: 1}. null: true, except for a .txt file found to be "
        "tab- or comma-separated, where it is guessed from the first row.",
    )
    sheet: str | None = Field(None, description="Excel files: the sheet to read (default: the first).")
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Map of the format's column names to the file's, e.g. {text: review, label: stars}; a position "
        "for a file without a header ({text: 0}); a dotted path into nested JSON ({text: review.body}).",
    )
    text_template: str | None = Field(
        None,
        description="Task heads (classify, qa): the input text built from several columns, e.g. '{title}. {text}' "
        "(classify: the text; qa: the question). Dotted paths reach into nested JSON: '{review.body}'.",
    )
    tag_column: int | str | None = Field(
        None,
        description="Tagged data: which column holds the tags: a position in a CoNLL line (0 is the token, -1 the "
        "last; default -1), or a column name in JSON/Parquet/Hugging Face rows (e.g. pos_tags).",
    )
    tag_scheme: TagScheme | None = Field(
        None,
        description="The chunk scheme of the files' tags: IOB1 (CoNLL-2003), BIO (= IOB2) or BIOES (= IOBES). Set, "
        "tags are converted to BIO for training and scored in seqeval's strict mode; null: tags are used as they are "
        "and scored as conlleval does.",
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
    canaries: int = Field(
        0,
        ge=0,
        description="Plant this many random secret strings in training replies (counted in data/report.json); the "
        "memorisation probe (eval.memorisation) then measures how many each model gives back.",
    )
    audit: bool = Field(
        False,
        description="During prepare, audit the training file (likely label errors, clusters, outliers, duplicates; "
        "as `tunesmith data audit`, with minilm-l6) into data/audit.json; the report shows it.",
    )
    audit_scorer: Literal["embeddings", "finetune"] = Field(
        "embeddings",
        description="How data.audit scores label errors: embeddings (frozen minilm-l6 embeddings + logistic "
        "regression, k-fold; seconds) or finetune (minilm-l6 with a classification head trained briefly per fold; "
        "minutes on a CPU). Measured on planted flips: docs/benchmarks.md.",
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

    @field_validator("columns", mode="before")
    @classmethod
    def _positions_as_text(cls, value: Any) -> Any:
        # `{text: 0}` names a column by position; a headerless file's columns are named "0", "1", ...
        if not isinstance(value, dict):
            return value
        return {k: str(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in value.items()}

    @field_validator("tag_column", mode="before")
    @classmethod
    def _tag_position(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        return value

    @field_validator("tag_scheme", mode="before")
    @classmethod
    def _scheme_alias(cls, value: Any) -> Any:
        # IOB2 and IOBES are other names of BIO and BIOES; anything else is refused by the Literal, with its key
        return TAG_SCHEME_ALIASES.get(value.strip().upper(), value) if isinstance(value, str) else value

    @field_validator("label_names", mode="before")
    @classmethod
    def _label_keys_as_text(cls, value: Any) -> Any:
        # YAML reads `{0: negative}` with an int key; labels in files are compared as text.
        return {str(k): v for k, v in value.items()} if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _check_format(self) -> DataConfig:
        if self.format == "template" and not self.prompt_template:
            raise ValueError("data.format is 'template' but data.prompt_template is not set")
        if self.text_template and self.prompt_template:
            raise ValueError(
                "set either data.text_template (the input of a task head) or data.prompt_template (a chat prompt), "
                "not both"
            )
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
