"""Trained runs loaded for generation, with streaming: what the server and the terminal chat share.

LoRA runs on the same base model share one copy of it (peft's multi-adapter support: each run is a named adapter,
activated per request). The terminal chat and the studio take turns on a model under the pool's lock; the server
decodes concurrent requests together instead (``ship/batching.py``).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tunesmith.core.errors import TunesmithError
from tunesmith.data.records import Message
from tunesmith.data.render import render_prompt
from tunesmith.models.adapt import PEFT_METHODS
from tunesmith.models.load import load_causal_lm
from tunesmith.pipeline.trained import TrainedRun

log = logging.getLogger("tunesmith.inference")


@dataclass
class Served:
    """One model a caller can choose by id."""

    id: str
    model: Any  # a plain causal LM, or the shared peft model
    adapter: str | None  # peft adapter to activate for this id; None for a plain model
    tokenizer: Any
    eos_ids: list[int]
    system_prompt: str | None
    max_context: int | None
    # Classification runs: texts -> [{"prediction", "confidence", "probabilities"}] (the caller holds the lock).
    classify: Callable[[list[str]], list[dict[str, Any]]] | None = None
    generates: bool = True  # False for a classification head, which has no text to generate


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (EOS or a stop string) | "length"


@dataclass
class Sampling:
    max_new_tokens: int
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None
    stop: Sequence[str] = ()


class ModelPool:
    """The served models by id, and the lock that serialises generation on them (the server's batching uses it for
    tokenizers only: a scheduler thread owns each model)."""

    def __init__(self, served: list[Served]) -> None:
        self.models = {s.id: s for s in served}
        self.lock = threading.Lock()

    def get(self, model_id: str) -> Served | None:
        return self.models.get(model_id)


def load_pool(runs: list[TrainedRun], include_base: bool = False) -> ModelPool:
    """Load trained runs for generation, keyed by run name; peft runs (LoRA, ...) sharing a base load it once.

    With ``include_base`` each run's base model is available too, as ``<run>:base``.
    """
    names = [run.dir.root.resolve().name for run in runs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise TunesmithError(f"two runs are named {duplicates[0]!r}; each served run needs its own name")
    served: list[Served] = []
    shared: dict[tuple[str, str | None], Any] = {}  # (base name, revision) -> peft model holding the adapters
    for run, name in zip(runs, names, strict=True):
        if run.recipe.peft_task_type != "CAUSAL_LM":  # a task head (classify): loaded on its own, never shared
            served.append(_served_head(name, run))
            continue
        model, tokenizer = _load(run, name, shared)
        peft = run.config.method.name in PEFT_METHODS
        served.append(_served(name, model, name if peft else None, tokenizer, run))
        if run.recipe.predict_texts is not None:  # classification as generation: a chat model and a classifier
            served[-1].classify = _classifier(run, served[-1])
        if include_base:  # peft: the shared model with its adapters disabled; otherwise a second, untouched copy
            base = model if peft else load_causal_lm(run.config.model).eval()
            served.append(_served(f"{name}:base", base, "__base__" if peft else None, tokenizer, run))
    return ModelPool(served)


def _load(run: TrainedRun, name: str, shared: dict[tuple[str, str | None], Any]) -> tuple[Any, Any]:
    from peft import PeftModel

    from tunesmith.models.prefix_compat import accept_past_key_values

    if run.config.method.name not in PEFT_METHODS:
        return run.load_tuned()  # whole weights, or tunesmith's bottleneck adapters: a model of its own
    key = (run.config.model.name, run.config.model.revision)
    tokenizer = run.tuned_tokenizer()
    if key in shared:
        shared[key].load_adapter(str(run.dir.model), adapter_name=name)
    else:
        base = load_causal_lm(run.config.model)
        # A prefix adapter may join this base later: give it the prefix's cache argument now (a no-op for others).
        accept_past_key_values(base)
        shared[key] = PeftModel.from_pretrained(base, str(run.dir.model), adapter_name=name)
    return shared[key].eval(), tokenizer


def _served_head(model_id: str, run: TrainedRun) -> Served:
    """A classification run with a task head: it classifies and does not generate."""
    if run.recipe.predict_texts is None:
        raise TunesmithError(f"{run.dir.root}: '{run.config.task.name}' runs cannot be served yet")
    model, tokenizer = run.load_tuned()
    served = Served(model_id, model, None, tokenizer, [], None, None, generates=False)
    served.classify = _classifier(run, served)
    return served


def _classifier(run: TrainedRun, served: Served) -> Callable[[list[str]], list[dict[str, Any]]]:
    predict = run.recipe.predict_texts

    def classify(texts: list[str]) -> list[dict[str, Any]]:
        if served.adapter is not None:
            served.model.set_adapter(served.adapter)
        assert predict is not None
        return predict(served.model, served.tokenizer, texts, run.config)

    return classify


def _served(model_id: str, model: Any, adapter: str | None, tokenizer: Any, run: TrainedRun) -> Served:
    eos = [tokenizer.eos_token_id]
    configured = model.generation_config.eos_token_id
    eos += configured if isinstance(configured, list) else [configured] if configured is not None else []
    return Served(
        id=model_id,
        model=model,
        adapter=adapter,
        tokenizer=tokenizer,
        eos_ids=list(dict.fromkeys(i for i in eos if i is not None)),
        system_prompt=run.config.task.system_prompt,
        max_context=getattr(model.config, "max_position_embeddings", None),
    )


def chat_prompt(served: Served, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of a conversation rendered with the run's chat template, ready for the assistant's reply.

    The run's system prompt is added when the conversation has none, as it was in training.
    """
    if served.system_prompt and not any(m["role"] == "system" for m in messages):
        messages = [{"role": "system", "content": served.system_prompt}, *messages]
    text = served.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return served.tokenizer(text, add_special_tokens=False)["input_ids"]


def tool_chat_prompt(served: Served, messages: list[Message], tools: list[dict[str, Any]] | None) -> list[int]:
    """Token ids of a conversation that may use tools, rendered as the run trained on such chats (the chat
    template's own tool format where it has one, else tunesmith's fallback format: docs/data.md)."""
    if served.system_prompt and not any(m.role == "system" for m in messages):
        messages = [Message("system", served.system_prompt), *messages]
    text = render_prompt(messages, served.tokenizer, tools)
    return served.tokenizer(text, add_special_tokens=False)["input_ids"]


def text_prompt(served: Served, text: str) -> list[int]:
    return served.tokenizer(text)["input_ids"]


@torch.no_grad()
def generate(
    served: Served,
    prompt_ids: list[int],
    sampling: Sampling,
    on_text: Callable[[str], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Generation:
    """Generate a reply (the caller holds the pool's lock); ``on_text`` receives the text as it is decoded.

    Generation stops at any of the model's EOS tokens (finish_reason "stop"), at a stop string, or after
    ``max_new_tokens`` ("length"). ``cancelled`` is polled between tokens, e.g. when a client disconnects.
    """
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _Cancelled(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            stop = bool(cancelled and cancelled())
            return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)

    model = served.model
    if served.adapter == "__base__":
        context: Any = model.disable_adapter()
    else:
        if served.adapter is not None:
            model.set_adapter(served.adapter)
        context = contextlib.nullcontext()
    stops = StopFilter(list(sampling.stop), on_text)
    streamer = text_streamer(served.tokenizer, stops.feed)
    ids = torch.tensor([prompt_ids], device=model.device)
    if sampling.seed is not None:
        torch.manual_seed(sampling.seed)
    options: dict[str, Any] = {"do_sample": sampling.temperature > 0}
    if sampling.temperature > 0:
        options |= {"temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": 0}
    if sampling.stop:
        options |= {"stop_strings": list(sampling.stop), "tokenizer": served.tokenizer}
    with context:
        output = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=sampling.max_new_tokens,
            eos_token_id=served.eos_ids,
            pad_token_id=served.tokenizer.pad_token_id,
            streamer=streamer,
            stopping_criteria=StoppingCriteriaList([_Cancelled()]),
            **options,
        )
    new = output[0, len(prompt_ids) :].tolist()
    text = stops.finish()
    stopped = stops.hit or (bool(new) and new[-1] in served.eos_ids)
    return Generation(text, len(prompt_ids), len(new), "stop" if stopped else "length")


class TokenStream:
    """A generation running in its own thread (holding the pool's lock), read piece by piece from a queue.

    ``cancel()`` makes the generation stop at its next token and release the lock: used when a client disconnects.
    """

    def __init__(self, pool: ModelPool, served: Served, prompt: list[int], sampling: Sampling) -> None:
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.cancelled = threading.Event()

        def work() -> None:
            try:
                with pool.lock:
                    result = generate(served, prompt, sampling, self._put_text, self.cancelled.is_set)
                self.events.put(("done", result))
            except Exception as exc:
                log.exception("streamed generation failed")
                self.events.put(("error", exc))

        threading.Thread(target=work, name="tunesmith-generate", daemon=True).start()

    def _put_text(self, text: str) -> None:
        self.events.put(("text", text))

    def next(self) -> tuple[str, Any]:
        return self.events.get()

    def cancel(self) -> None:
        self.cancelled.set()


def text_streamer(tokenizer: Any, callback: Callable[[str], None]) -> Any:
    """transformers' TextStreamer (incremental, word-boundary decoding) handing text to ``callback``."""
    from transformers import TextStreamer

    class Streamer(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                callback(text)

    return Streamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


class StopFilter:
    """Cuts the text at the first stop string, holding back a possible partial match so none is ever emitted.

    Written by hand: generate()'s ``stop_strings`` ends generation but leaves the stop string in the output.
    """

    def __init__(self, stops: list[str], on_text: Callable[[str], None] | None) -> None:
        self.stops, self.on_text = [s for s in stops if s], on_text
        self.text, self.sent, self.hit = "", 0, False
        self.hold = max((len(s) for s in self.stops), default=1) - 1

    def feed(self, piece: str) -> None:
        if self.hit:
            return
        self.text += piece
        cut = min((i for i in (self.text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.text, self.hit = self.text[:cut], True
            self._emit(len(self.text))
        else:
            self._emit(len(self.text) - self.hold)

    def finish(self) -> str:
        self._emit(len(self.text))
        return self.text

    def _emit(self, upto: int) -> None:
        if upto > self.sent:
            if self.on_text:
                self.on_text(self.text[self.sent : upto])
            self.sent = upto
