"""Graders as OpenAI defines them (evals, reinforcement fine-tuning), accepted unchanged: the JSON shapes only.

``string_check``, ``text_similarity``, ``python``, ``score_model``, ``label_model`` and ``multi`` (a
``calculate_output`` formula over named graders). Templates ``{{ sample.output_text }}`` and ``{{ item.<field> }}``
are checked here for their namespace; scoring lives in ``tunesmith.metrics.graders``.

``parse_grader`` / ``parse_graders`` / ``read_grader_file`` are what anything that receives a grader object
calls (the config, a jobs API taking ``method: reinforcement``): they raise ``ConfigError`` naming the place, the
field and what was expected.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, ValidationError, field_validator, model_validator

from tunesmith.core.config.base import Section
from tunesmith.core.errors import ConfigError
from tunesmith.core.formula import FormulaError, parse_formula

TEMPLATE = re.compile(r"\{\{\s*(.*?)\s*\}\}")
VARIABLE = re.compile(r"^(sample|item)((\.[A-Za-z_][\w-]*)|(\[\d+\]))+$")
SIMILARITY_METRICS = (
    "fuzzy_match", "bleu", "gleu", "meteor", "cosine",
    "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5", "rouge_l",
)  # fmt: skip


def check_template(text: str, where: str = "") -> str:
    """Every ``{{ ... }}`` must name ``sample.<path>`` or ``item.<path>`` (OpenAI's two namespaces)."""
    for expression in TEMPLATE.findall(text):
        if not VARIABLE.match(expression):
            prefix = f"{where}: " if where else ""
            raise ValueError(
                f"{prefix}template {{{{ {expression} }}}} must read sample.<field> or item.<field> "
                "(e.g. {{ sample.output_text }}, {{ item.reference }})"
            )
    return text


class _Grader(Section):
    name: str = Field(min_length=1, description="The grader's name (its metric in eval: grader:<name>).")


class StringCheckGrader(_Grader):
    """1 when the check holds, else 0: eq / ne (case-sensitive), like / ilike (input contains reference)."""

    type: Literal["string_check"]
    input: str
    reference: str
    operation: Literal["eq", "ne", "like", "ilike"]

    @field_validator("input", "reference")
    @classmethod
    def _templates(cls, value: str) -> str:
        return check_template(value)


class TextSimilarityGrader(_Grader):
    """A similarity of input to reference from 0 to 1 (see ``SIMILARITY_METRICS``)."""

    type: Literal["text_similarity"]
    input: str
    reference: str
    evaluation_metric: Literal[
        "fuzzy_match", "bleu", "gleu", "meteor", "cosine",
        "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5", "rouge_l",
    ]  # fmt: skip
    pass_threshold: float | None = None

    @field_validator("input", "reference")
    @classmethod
    def _templates(cls, value: str) -> str:
        return check_template(value)


class PythonGrader(_Grader):
    """``source`` defines ``grade(sample, item) -> float``; run in a separate, limited process."""

    type: Literal["python"]
    source: str = Field(min_length=1)
    image_tag: str | None = Field(None, description="OpenAI's runtime image; ignored (the local Python runs it).")
    pass_threshold: float | None = None

    @field_validator("source")
    @classmethod
    def _defines_grade(cls, value: str) -> str:
        if not re.search(r"^\s*def\s+grade\s*\(", value, re.MULTILINE):
            raise ValueError("python grader: source must define grade(sample, item)")
        return value


class TextPart(Section):
    """A text block of a message's content."""

    type: Literal["input_text", "output_text"]
    text: str


class Message(Section):
    """A message to a judge model; its text may hold templates."""

    role: Literal["user", "assistant", "system", "developer"]
    content: str | TextPart | list[str | TextPart]
    type: Literal["message"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _text_only(cls, raw: Any) -> Any:
        parts = raw.get("content") if isinstance(raw, dict) else None
        for part in parts if isinstance(parts, list) else [parts]:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in ("input_image", "input_audio"):
                raise ValueError(f"model grader input: {kind} content is not supported here (text only)")
        return raw

    @model_validator(mode="after")
    def _templates(self) -> Message:
        check_template(self.text, "model grader input")
        return self

    @property
    def text(self) -> str:
        """The message's text, its blocks joined."""
        parts = self.content if isinstance(self.content, list) else [self.content]
        return "\n".join(p if isinstance(p, str) else p.text for p in parts)


class SamplingParams(Section):
    max_completions_tokens: int | None = Field(None, gt=0)
    reasoning_effort: str | None = Field(None, description="Passed to an endpoint; local models ignore it.")
    seed: int | None = None
    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)


class ScoreModelGrader(_Grader):
    """A judge model scores the sample within ``range`` (default [0, 1])."""

    type: Literal["score_model"]
    input: list[Message] = Field(min_length=1)
    model: str = Field(min_length=1)
    range: list[float] | None = None
    sampling_params: SamplingParams | None = None
    pass_threshold: float | None = None

    @field_validator("range")
    @classmethod
    def _range(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and (len(value) != 2 or value[0] >= value[1]):
            raise ValueError(f"score_model range: expected two numbers [low, high] with low < high, got {value}")
        return value

    @property
    def bounds(self) -> tuple[float, float]:
        low, high = self.range or [0.0, 1.0]
        return low, high


class LabelModelGrader(_Grader):
    """A judge model picks one of ``labels``; 1 when it is one of ``passing_labels``."""

    type: Literal["label_model"]
    input: list[Message] = Field(min_length=1)
    model: str = Field(min_length=1)
    labels: list[str] = Field(min_length=2)
    passing_labels: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _passing_subset(self) -> LabelModelGrader:
        unknown = [label for label in self.passing_labels if label not in self.labels]
        if unknown:
            raise ValueError(f"label_model passing_labels {unknown} are not among labels {self.labels}")
        return self


SubGrader = Annotated[
    StringCheckGrader | TextSimilarityGrader | PythonGrader | ScoreModelGrader | LabelModelGrader,
    Field(discriminator="type"),
]


class MultiGrader(_Grader):
    """Named graders combined by a ``calculate_output`` formula (``+ - * / ^``, min max abs floor ceil exp sqrt
    log)."""

    type: Literal["multi"]
    graders: dict[str, SubGrader]
    calculate_output: str
    pass_threshold: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_grader(cls, raw: Any) -> Any:
        # OpenAI's SDK types `graders` as one grader object; its guide writes a mapping of names to graders.
        graders = raw.get("graders") if isinstance(raw, dict) else None
        if isinstance(graders, dict) and isinstance(graders.get("type"), str):
            raw = {**raw, "graders": {graders.get("name", "grader"): graders}}
        return raw

    @model_validator(mode="after")
    def _formula(self) -> MultiGrader:
        try:
            formula = parse_formula(self.calculate_output)
        except FormulaError as exc:
            raise ValueError(f"multi grader calculate_output: {exc}") from None
        unknown = sorted(formula.variables - set(self.graders))
        if unknown:
            raise ValueError(
                f"multi grader calculate_output reads {', '.join(unknown)}, which is not among its graders "
                f"({', '.join(self.graders)})"
            )
        return self


Grader = Annotated[
    StringCheckGrader | TextSimilarityGrader | PythonGrader | ScoreModelGrader | LabelModelGrader | MultiGrader,
    Field(discriminator="type"),
]
GRADER_TYPES = ("string_check", "text_similarity", "python", "score_model", "label_model", "multi")
_ADAPTER: TypeAdapter[Any] = TypeAdapter(Grader)


def parse_grader(raw: Any, where: str = "grader") -> Any:
    """One grader object (a dict in OpenAI's shape) as its typed model; ConfigError naming ``where`` and the field."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a grader object with a type, got {type(raw).__name__}")
    if raw.get("type") not in GRADER_TYPES:
        raise ConfigError(f"{where}: type {raw.get('type')!r} is not a grader type; expected one of {GRADER_TYPES}")
    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as exc:
        raise ConfigError(f"{where}: invalid grader\n" + "\n".join(grader_errors(exc))) from None


def parse_graders(raw: Any, where: str = "graders") -> list[Any]:
    """A list of grader objects, names unique."""
    if not isinstance(raw, list):
        raw = [raw]
    graders = [parse_grader(item, f"{where}[{i}]") for i, item in enumerate(raw)]
    names = [g.name for g in graders]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{where}: grader names must differ; {', '.join(map(repr, duplicates))} repeats")
    return graders


def read_grader_file(path: str | Path) -> list[dict[str, Any]]:
    """The grader objects in a JSON or JSONL file, as plain dicts: one grader, a list, ``{"graders": [...]}``, an
    eval's ``testing_criteria``, ``{"grader": ...}``, or a fine-tuning job's ``method.reinforcement.grader``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"eval.graders: grader file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            found: Any = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            found = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if isinstance(found, dict):
        method = found.get("method")
        reinforcement = method.get("reinforcement") if isinstance(method, dict) else None
        if isinstance(reinforcement, dict) and "grader" in reinforcement:
            found = reinforcement["grader"]
        elif "testing_criteria" in found:
            found = found["testing_criteria"]
        elif "grader" in found and "type" not in found:
            found = found["grader"]
        elif isinstance(found.get("graders"), list) and "type" not in found:
            found = found["graders"]
    graders = found if isinstance(found, list) else [found]
    parse_graders(graders, str(path))  # errors name the file
    return graders


def grader_errors(exc: ValidationError) -> list[str]:
    """pydantic's errors of a grader as ``  - field: message`` lines (the union's tag left out of the path)."""
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"] if str(p) not in GRADER_TYPES]
        key = ".".join(loc) or "grader"
        message = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif err["type"] == "missing":
            message = "required but not set"
        elif err["type"] == "literal_error":
            message = f"{message.lower()}, got {err.get('input')!r}"
        lines.append(f"  - {key}: {message}")
    return lines
