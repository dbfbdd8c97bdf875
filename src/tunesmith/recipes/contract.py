"""The recipe contract: what one task gives the engine, the pipeline and the ship layer, as typed values.

A task module builds a ``Recipe`` (``recipe(config) -> Recipe``). Capabilities are fields, declared: a recipe
trains on the engine's loop (``EngineTraining``) or owns its loop (``OwnLoop``); it is evaluated on chat replies
(``ChatEvaluation``), on per-record predictions (``TaskEvaluation``) or by its own evaluation (``OwnEvaluation``).
Nothing downstream asks a recipe whether it happens to have an attribute.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from tunesmith.core.config import RunConfig, TrainingConfig
from tunesmith.core.rundir import RunDir
from tunesmith.data.records import Chat, Record
from tunesmith.engine import Batch, TaskFns

__all__ = [
    "Batch",
    "ChatEvaluation",
    "EngineTraining",
    "OwnEvaluation",
    "OwnLoop",
    "Recipe",
    "TaskEnsemble",
    "TaskEvaluation",
    "TaskFns",
    "TrainedRunView",
    "own_loop_options",
]

Prediction = dict[str, Any]  # one JSON-ready prediction of a record (at least {"prediction": ...})


class TrainedRunView(Protocol):
    """What a recipe's own hooks (own loop, own evaluation) may use of a run: its config, directory and models.

    The pipeline's ``TrainedRun`` (and ``Run``) satisfy it; recipes never import the pipeline.
    """

    config: RunConfig
    dir: RunDir
    recipe: Recipe

    def labels(self) -> list[str] | None: ...
    def load_base(self) -> Any: ...
    def tuned_from_base(self, base_model: Any) -> Any: ...
    def tuned_tokenizer(self) -> Any: ...
    def load_tuned(self) -> tuple[Any, Any]: ...


# ------------------------------------------------------------ training


@dataclass(frozen=True)
class EngineTraining:
    """Trained by the engine's loop: examples from records, and the engine's collate / count / loss."""

    encode_row: Callable[[Record, Any, RunConfig], Any]  # (record, tokenizer, cfg) -> example with input_ids, ...
    train_fns: Callable[[Any, RunConfig, int | None], TaskFns]  # (tokenizer, cfg, pack_len) -> TaskFns


@dataclass(frozen=True)
class OwnLoop:
    """A recipe that owns its loop (PPO, GRPO sample rollouts as they train).

    ``train(run, resume)`` does what the engine path does: apply the method, write ``metrics.jsonl``, save the
    model to ``run.dir.model`` and mark ``train`` done, with checkpoints and exact ``--resume``. ``Run.train``
    has already refused unfinished checkpoints without ``--resume``.
    """

    train: Callable[[TrainedRunView, bool], Any]


# ------------------------------------------------------------ evaluation


@dataclass(frozen=True)
class ChatEvaluation:
    """Generative recipes: greedy replies to the test chats, scored by ``tunesmith.pipeline.evaluation``."""

    generate_replies: Callable[..., list[Any]]  # (model, tokenizer, chats, max_new_tokens, batch_size, ...) -> replies
    score: Callable[[Sequence[Any], Sequence[str], list[str] | None], dict[str, float]]
    is_correct: Callable[[Any, str, list[str] | None], bool]
    details: Callable[[Sequence[Any], Sequence[str], list[str] | None], dict[str, Any]]
    # a reply of the given text, confidence and label probabilities (majority-class baseline, ensembles)
    reply: Callable[..., Any]
    task_fns: Callable[..., TaskFns]  # the LM loss on chats (forgetting: perplexity on general chat)
    encode: Callable[[Chat, Any, str, int], Any]  # (chat, tokenizer, train_on, max_len) -> example


@dataclass(frozen=True)
class TaskEnsemble:
    """How runs of a task are combined by averaging their class probabilities (``tunesmith eval --ensemble``).

    ``probabilities(run, records, predictions)`` gives each record's probabilities over ``run.labels()`` (in that
    order): a list of floats (a class per record) or a list of them (a class per word); ``predictions`` are the
    run's own evaluation predictions of ``records``. ``prediction(labels, probabilities, record)`` is the task's
    prediction from probabilities averaged over the runs, scored by its ``score_records``.
    """

    probabilities: Callable[[TrainedRunView, Sequence[Record], Sequence[Prediction]], list[Any]]
    prediction: Callable[[list[str], Any, Record], Prediction]


@dataclass(frozen=True)
class TaskEvaluation:
    """Per-record predictions scored by the task's own metrics (``tunesmith.pipeline.task_evaluation``)."""

    predict_records: Callable[[Any, Any, Sequence[Record], RunConfig, str], list[Prediction]]
    score_records: Callable[[Sequence[Prediction], Sequence[Record], RunConfig], dict[str, float]]
    base_is_meaningful: bool  # False where an untrained model cannot answer (a fresh head): no base comparison
    row_correct: Callable[[Prediction, Record], bool] | None = None  # per-row correctness (McNemar's test)
    baselines: Callable[[Sequence[Record], Sequence[Record], RunConfig], dict[str, list[Prediction]]] | None = None
    details: Callable[[Sequence[Prediction], Sequence[Record], RunConfig], dict[str, Any]] | None = None
    describe: Callable[[Record], dict[str, str]] | None = None  # input and reference texts for people
    ensemble: TaskEnsemble | None = None  # how its runs average into an ensemble; None: they do not


@dataclass(frozen=True)
class OwnEvaluation:
    """Preference, reward-free RL: the recipe measures itself (reward accuracy, KL, win rate) and writes
    ``eval/metrics.json`` as ``{"base": ..., "tuned": ...}``, marking ``evaluate`` done for ``run.dir.eval``."""

    evaluate_run: Callable[..., dict[str, Any]]  # (run, split="test", chats=None, out_dir=None) -> metrics


Evaluation = ChatEvaluation | TaskEvaluation | OwnEvaluation
Training = EngineTraining | OwnLoop

# Methods for a task head on an encoder: qlora (a 4-bit base on a GPU) and prune (decoder layers dropped by their
# effect on the next-token stream) are meant for large causal LMs; a head on an encoder trains in full or with
# adapters.
ENCODER_HEAD_METHODS = ("full", "freeze", "lora", "prefix", "prompt", "ia3", "adapter")

# training.* settings a recipe on the engine's loop honours: all of them.
ENGINE_OPTIONS = frozenset(TrainingConfig.model_fields)


@dataclass(frozen=True)
class Recipe:
    """One task: how its records become model inputs, how it trains, how it is evaluated, what it can ship as."""

    name: str  # the task.name it answers to
    accepts: tuple[type, ...]  # record types it trains on after ``convert``; others are refused before preparing
    peft_task_type: str | None  # peft's task type for adapters (which head peft trains and saves); None: no peft
    packs: bool  # whether its examples can be packed into rows
    methods: tuple[str, ...] | None  # method.name values that make sense for the task; None: all
    convert: Callable[[Record, RunConfig], Record]  # raise RowError to reject one row (counted)
    load_model: Callable[..., Any]  # (cfg, resolved=None, quantization=None, labels=None) -> model with the head
    auto_class: Callable[[], type]  # the AutoModelFor... class that loads a fully fine-tuned model of the task
    training: Training
    evaluation: Evaluation
    method_reasons: dict[str, str] = field(default_factory=dict)  # why a method is refused, when it needs saying
    training_options: frozenset[str] = ENGINE_OPTIONS  # training.* keys it honours; others must stay at default
    labels: Callable[[Iterable[Record]], list[str] | None] | None = None  # the label set when not one per row
    # texts -> class probabilities ({"prediction", "confidence", "probabilities"}): predict, /v1/classify, annotate
    predict_texts: Callable[[Any, Any, Sequence[str], RunConfig], list[Prediction]] | None = None
    annotator: Literal["label_words", "classifier"] | None = None  # how a trained run pre-labels rows, if it can
    # A chat policy answers chats (served on /v1/chat/completions, chat, predict): how it replies to a batch,
    # (model, tokenizer, chats, max_new_tokens, batch_size, description, sampling=None) -> reply texts.
    chat_replies: Callable[..., list[str]] | None = None
    predicts_targets: bool = False  # predict writes predict_records' generated targets (seq2seq)
    hands_on_model: bool = False  # a sequential run may start its next stage from this task's model

    @property
    def uses_chat_template(self) -> bool:
        """Causal-LM recipes render chats with the tokenizer's chat template (a fallback is added if missing)."""
        return self.peft_task_type == "CAUSAL_LM"


def own_loop_options(*names: str) -> frozenset[str]:
    """The training.* keys a recipe with its own loop honours (every other key must stay at its default)."""
    unknown = set(names) - set(TrainingConfig.model_fields)
    if unknown:
        raise ValueError(f"not training settings: {sorted(unknown)}")
    return frozenset(names)
