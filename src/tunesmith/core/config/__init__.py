"""The run configuration: one pydantic schema, the only place a setting is defined.

A run YAML has the sections ``model``, ``data``, ``task``, ``method``, ``training``, ``eval`` and
``output``. Every problem (unknown key, wrong type, impossible combination) is reported before any work
starts, naming the key, the value and what is allowed.

One module per job: ``base`` (the section base class), ``model``, ``data``, ``task``, ``method`` and ``training``
(their sections), ``run`` (the whole run, eval / output / sweep / stages), ``loader`` (YAML, ``--set``, stages) and
``messages`` (validation errors as user messages), ``graders`` (OpenAI's grader JSON) and
``gate`` (``eval.gate``). Import from this package, not from its modules.
"""

from tunesmith.core.config.base import Section
from tunesmith.core.config.data import (
    DATA_PATH_KEYS,
    AugmentConfig,
    AugmentOp,
    CleanConfig,
    DataConfig,
    DataFormat,
    DedupConfig,
    FileReader,
    MixConfig,
    ParallelFiles,
    PiiConfig,
)
from tunesmith.core.config.gate import (
    DeltaCheck,
    FactualDriftCheck,
    ForgettingCheck,
    GateCheck,
    NotAboveBaseCheck,
    ScoreCheck,
)
from tunesmith.core.config.graders import (
    Grader,
    LabelModelGrader,
    MultiGrader,
    PythonGrader,
    ScoreModelGrader,
    StringCheckGrader,
    TextSimilarityGrader,
    parse_grader,
    parse_graders,
    read_grader_file,
)
from tunesmith.core.config.loader import apply_override, load_config, load_raw_config, stage_configs, validate_config
from tunesmith.core.config.messages import _section_type as _section_type  # used by tunesmith.sweep.search
from tunesmith.core.config.method import (
    METHOD_SECTIONS,
    AdapterConfig,
    FreezeConfig,
    Ia3Config,
    LoraConfig,
    MethodConfig,
    MethodName,
    PrefixConfig,
    PromptConfig,
    PruneConfig,
    QloraConfig,
)
from tunesmith.core.config.model import ModelConfig
from tunesmith.core.config.run import (
    STAGE_SECTIONS,
    EvalConfig,
    GradingConfig,
    OutputConfig,
    RunConfig,
    StageConfig,
    SweepConfig,
)
from tunesmith.core.config.run import _BlockDumper as _BlockDumper  # used by tunesmith.sweep.search
from tunesmith.core.config.task import (
    TASK_SECTIONS,
    ClassifyConfig,
    LmConfig,
    PreferenceConfig,
    QaConfig,
    RlConfig,
    Seq2SeqConfig,
    TaskConfig,
    TaskName,
)
from tunesmith.core.config.training import TrainingConfig
from tunesmith.core.errors import ConfigError

__all__ = [
    "DATA_PATH_KEYS",
    "METHOD_SECTIONS",
    "STAGE_SECTIONS",
    "TASK_SECTIONS",
    "AdapterConfig",
    "AugmentConfig",
    "AugmentOp",
    "ClassifyConfig",
    "CleanConfig",
    "ConfigError",
    "DataConfig",
    "DataFormat",
    "DedupConfig",
    "DeltaCheck",
    "EvalConfig",
    "FactualDriftCheck",
    "FileReader",
    "ForgettingCheck",
    "FreezeConfig",
    "GateCheck",
    "Grader",
    "GradingConfig",
    "Ia3Config",
    "LabelModelGrader",
    "LmConfig",
    "LoraConfig",
    "MethodConfig",
    "MethodName",
    "MixConfig",
    "ModelConfig",
    "MultiGrader",
    "NotAboveBaseCheck",
    "OutputConfig",
    "ParallelFiles",
    "PiiConfig",
    "PreferenceConfig",
    "PrefixConfig",
    "PromptConfig",
    "PruneConfig",
    "PythonGrader",
    "QaConfig",
    "QloraConfig",
    "RlConfig",
    "RunConfig",
    "ScoreCheck",
    "ScoreModelGrader",
    "Section",
    "Seq2SeqConfig",
    "StageConfig",
    "StringCheckGrader",
    "SweepConfig",
    "TaskConfig",
    "TaskName",
    "TextSimilarityGrader",
    "TrainingConfig",
    "apply_override",
    "load_config",
    "load_raw_config",
    "parse_grader",
    "parse_graders",
    "read_grader_file",
    "stage_configs",
    "validate_config",
]
