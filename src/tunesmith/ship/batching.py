"""Continuous batching for the server: one scheduler thread per loaded model owns it; requests join the running
batch between decode steps and leave it as soon as they finish.

Why continuous rather than dynamic batching: under mixed reply lengths a dynamic batch runs until its longest
member is done, so short requests wait for long ones; here a finished sequence leaves at once and a waiting one
takes its place at the next step.

How a sequence joins: its prompt is prefilled alone (batch of one, as ``generate()`` does it), which gives its
first token; its KV cache is then left-padded to the batch's length and stacked onto the batch's cache, with an
attention mask hiding the padding and its own position ids. Decode steps then run the whole batch at once.
Written by hand: transformers' ``generate()`` has no way to add or drop sequences while it runs, and the serving
engines that do (vLLM, TGI) are separate servers, not libraries to call here.

Greedy replies are the same as one at a time up to floating point: a padded, batched decode step sums in another
order (different matrix shapes, masked positions), which moves logits by ~1e-6 and can flip an argmax on a
near-tie; docs/benchmarks.md says how often that happened on real prompts. ``max_batch=1`` runs each request
through ``generate()`` alone, exactly as the serial server did.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch

from tunesmith.core.errors import TunesmithError
from tunesmith.ship.inference import Generation, Sampling, Served, StopFilter, generate, text_streamer

log = logging.getLogger("tunesmith.batching")

# Generation settings that generate() would apply from a model's generation_config and this loop does not: a model
# with any of them set is served one request at a time through generate() instead.
_UNSUPPORTED = {
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "min_length": 0,
    "min_new_tokens": None,
    "sequence_bias": None,
}


class Overloaded(TunesmithError):
    """The scheduler's queue is full: the caller should retry later (HTTP 503)."""


@dataclass(eq=False)
class Job:
    """One request in a scheduler: a generation (``served`` + ``prompt`` + ``sampling``) or a plain call."""

    served: Served | None
    prompt: list[int]
    sampling: Sampling | None
    on_text: Callable[[str], None] | None = None
    call: Callable[[], Any] | None = None  # run alone on the scheduler thread (classification)
    future: Future[Any] = field(default_factory=Future)
    cancelled: threading.Event = field(default_factory=threading.Event)
    # decoding state, owned by the scheduler thread
    new: list[int] = field(default_factory=list)
    stops: Any = None
    streamer: Any = None
    rng: torch.Generator | None = None
    started: float | None = None  # time.monotonic() when the job joined the batch (or started alone) ...
    ended: float | None = None  # ... and when it finished

    def cancel(self) -> None:
        """Stop at the next step (the client went away); the future gets what was generated so far."""
        self.cancelled.set()


class Scheduler:
    """The thread that owns one model: it runs the jobs given to it, batching generations of the same served id."""

    def __init__(self, max_batch: int, max_queue: int, text_lock: threading.Lock, name: str = "") -> None:
        if max_batch < 1 or max_queue < 0:
            raise TunesmithError(f"max_batch must be >= 1 and max_queue >= 0; got {max_batch} and {max_queue}")
        self.max_batch, self.max_queue = max_batch, max_queue
        self.text_lock = text_lock  # tokenizers are shared with request handlers (see app.prepare)
        self.waiting: deque[Job] = deque()
        self.unfinished = 0  # jobs submitted and not yet done: the running batch plus the waiting ones
        self.wake = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._loop, name=f"tunesmith-batch-{name}", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> Job:
        """Queue a job; ``Overloaded`` when the batch is full and ``max_queue`` more jobs wait already."""
        with self.wake:
            if self.unfinished >= self.max_batch + self.max_queue:
                raise Overloaded(
                    f"the server is busy: {self.unfinished} requests are running or waiting for this model "
                    f"(at most {self.max_batch} + {self.max_queue}); retry later"
                )
            self.unfinished += 1
            self.waiting.append(job)
            self.wake.notify()
        job.future.add_done_callback(self._finished)
        return job

    def _finished(self, future: Future[Any]) -> None:
        with self.wake:
            self.unfinished -= 1

    def close(self) -> None:
        with self.wake:
            self.closed = True
            self.wake.notify()
        self.thread.join(timeout=10)

    # -- the scheduler thread --

    def _loop(self) -> None:
        batch = _Batch()
        while True:
            with self.wake:
                while not self.waiting and not batch.rows and not self.closed:
                    self.wake.wait()
                if self.closed:
                    return
            try:
                self._admit(batch)
                if batch.rows:
                    self._step(batch)
            except Exception as exc:  # a failed step fails its requests, never the thread
                log.exception("batched generation failed")
                for job in batch.rows:
                    _fail(job, exc)
                batch = _Batch()

    def _take(self, batch: _Batch) -> Job | None:
        """The next waiting job that may join now: FIFO, and only the batch's own served id while it runs."""
        with self.wake:
            while self.waiting and self.waiting[0].cancelled.is_set():
                _fail(self.waiting.popleft(), None)
            if not self.waiting or len(batch.rows) >= self.max_batch:
                return None
            head = self.waiting[0]
            if batch.rows and (head.served is not batch.served or head.call is not None):
                return None
            return self.waiting.popleft()

    def _admit(self, batch: _Batch) -> None:
        while (job := self._take(batch)) is not None:
            if job.call is not None or self.max_batch == 1 or not batchable(job.served):
                self._alone(job)
                batch.active = None  # a call may have switched adapters
                continue
            try:
                self._join(batch, job)
            except Exception as exc:
                log.exception("prefill failed")
                _fail(job, exc)

    def _alone(self, job: Job) -> None:
        """A call, or a generation through generate() exactly as the serial server ran it."""
        job.started = time.monotonic()
        try:
            if job.call is not None:
                result = job.call()
                job.ended = time.monotonic()
                job.future.set_result(result)
                return
            assert job.served is not None and job.sampling is not None
            result = generate(job.served, job.prompt, job.sampling, job.on_text, job.cancelled.is_set)
            job.ended = time.monotonic()
            job.future.set_result(result)
        except Exception as exc:
            _fail(job, exc)

    def _join(self, batch: _Batch, job: Job) -> None:
        served, sampling = job.served, job.sampling
        assert served is not None and sampling is not None
        job.started = time.monotonic()
        job.stops = StopFilter(list(sampling.stop), job.on_text)
        job.streamer = text_streamer(served.tokenizer, job.stops.feed)
        if sampling.temperature > 0:
            job.rng = torch.Generator(device=served.model.device)
            job.rng.manual_seed(sampling.seed if sampling.seed is not None else secrets.randbits(63))
        ids = torch.tensor([job.prompt], device=served.model.device)
        with self.text_lock:
            job.streamer.put(ids.cpu())  # skipped: the streamer then knows where the reply starts
        batch.activate(served)
        options: dict[str, Any] = {"logits_to_keep": 1} if _keeps_logits(served.model) else {}
        with torch.no_grad():
            out = served.model(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                position_ids=torch.arange(ids.shape[1], device=ids.device)[None],
                use_cache=True,
                **options,
            )
        token = _pick(out.logits[:, -1, :], [job])[0]
        if self._record(job, token):
            return
        batch.add(job, _cache_of(out), token)

    def _step(self, batch: _Batch) -> None:
        assert batch.served is not None
        batch.activate(batch.served)
        with torch.no_grad():
            logits = batch.forward()
        tokens = _pick(logits, batch.rows)
        done = [self._record(job, token) for job, token in zip(batch.rows, tokens, strict=True)]
        batch.advance(tokens, done)

    def _record(self, job: Job, token: int) -> bool:
        """Add one token to a job; True (and the job's future is set) when the job is finished."""
        assert job.served is not None and job.sampling is not None
        job.new.append(token)
        with self.text_lock:
            job.streamer.put(torch.tensor([token]))
            hit = bool(job.sampling.stop) and _has_stop(job, job.sampling.stop)
        ended = token in job.served.eos_ids or hit
        if not (ended or len(job.new) >= job.sampling.max_new_tokens or job.cancelled.is_set()):
            return False
        with self.text_lock:
            job.streamer.end()
            text = job.stops.finish()
        stopped = job.stops.hit or token in job.served.eos_ids
        job.ended = time.monotonic()
        job.future.set_result(Generation(text, len(job.prompt), len(job.new), "stop" if stopped else "length"))
        return True


class _Batch:
    """The running sequences of one served id: a left-padded KV cache, its attention mask and next positions."""

    def __init__(self) -> None:
        self.rows: list[Job] = []
        self.served: Served | None = None
        self.active: str | None = None  # the peft adapter set on the model
        self.cache: Any = None
        self.mask = torch.zeros(0, 0, dtype=torch.long)
        self.tokens = torch.zeros(0, dtype=torch.long)  # the last token of each row, fed at the next step
        self.positions = torch.zeros(0, dtype=torch.long)

    def activate(self, served: Served) -> None:
        if served.adapter is not None and self.active != served.adapter:
            served.model.set_adapter(served.adapter)
        self.active = served.adapter

    def add(self, job: Job, cache: Any, token: int) -> None:
        length = len(job.prompt)
        if not self.rows:
            self.served, self.cache = job.served, cache
            self.mask = torch.ones(1, length, dtype=torch.long)
        else:
            width = max(self.mask.shape[1], length)
            for mine, theirs in zip(self.cache.layers, cache.layers, strict=True):
                mine.keys = torch.cat([_pad_left(mine.keys, width), _pad_left(theirs.keys, width)])
                mine.values = torch.cat([_pad_left(mine.values, width), _pad_left(theirs.values, width)])
            row = torch.ones(1, length, dtype=torch.long)
            self.mask = torch.cat([_pad_left(self.mask, width, dim=1), _pad_left(row, width, dim=1)])
        self.rows.append(job)
        self.tokens = torch.cat([self.tokens, torch.tensor([token])])
        self.positions = torch.cat([self.positions, torch.tensor([length])])

    def forward(self) -> torch.Tensor:
        assert self.served is not None
        model = self.served.model
        width = self.mask.shape[1]
        self.mask = torch.cat([self.mask, torch.ones(len(self.rows), 1, dtype=torch.long)], dim=1)
        device = model.device
        out = model(
            input_ids=self.tokens[:, None].to(device),
            attention_mask=self.mask.to(device),
            position_ids=self.positions[:, None].to(device),
            **{_cache_argument(model): self.cache},
            cache_position=torch.tensor([width], device=device),
            use_cache=True,
        )
        self.cache = _cache_of(out)
        return out.logits[:, -1, :]

    def advance(self, tokens: list[int], done: list[bool]) -> None:
        self.tokens = torch.tensor(tokens)
        self.positions = self.positions + 1
        if not any(done):
            return
        keep = [i for i, finished in enumerate(done) if not finished]
        self.rows = [self.rows[i] for i in keep]
        if not self.rows:
            self.__init__()  # type: ignore[misc]
            return
        index = torch.tensor(keep)
        self.tokens, self.positions, self.mask = self.tokens[index], self.positions[index], self.mask[index]
        start = int((self.mask.sum(0) > 0).nonzero()[0])  # drop columns that are padding in every row left
        self.mask = self.mask[:, start:]
        for layer in self.cache.layers:
            layer.keys = layer.keys[index.to(layer.keys.device), :, start:]
            layer.values = layer.values[index.to(layer.values.device), :, start:]


def batchable(served: Served | None) -> bool:
    """Whether this loop can run the model: a decoder with plain per-layer KV caches, no prompt-learning adapter,
    no base-through-disabled-adapter, and no generation_config settings that only generate() applies."""
    if served is None or served.adapter == "__base__":
        return False
    from peft import PeftModel

    model = served.model
    adapter = model.peft_config.get(served.adapter or "") if isinstance(model, PeftModel) else None
    if adapter is not None and adapter.is_prompt_learning:
        return False
    config = model.config  # architectures differ in which of these they define
    if getattr(config, "is_encoder_decoder", False) or getattr(config, "sliding_window", None):
        return False
    generation = model.generation_config
    return generation is None or all(getattr(generation, k, v) in (v, None) for k, v in _UNSUPPORTED.items())


def _base_model(model: Any) -> Any:
    from peft import PeftModel

    return model.get_base_model() if isinstance(model, PeftModel) else model


def _keeps_logits(model: Any) -> bool:
    """generate() asks for the last position's logits only when the model can (so must the prefill here)."""
    import inspect

    base = _base_model(model)
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def _cache_argument(model: Any) -> str:
    """transformers 5.x renamed the forward argument ``past_key_values`` to ``cache`` (the old name warns)."""
    import inspect

    base = _base_model(model)
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _cache_of(output: Any) -> Any:
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def _pad_left(tensor: torch.Tensor, width: int, dim: int = 2) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _pick(logits: torch.Tensor, jobs: list[Job]) -> list[int]:
    """Each row's next token: argmax for greedy rows, else temperature + top-p sampling with the row's own RNG."""
    logits = logits.float()
    picked = logits.argmax(-1).tolist()
    for i, job in enumerate(jobs):
        sampling = job.sampling
        assert sampling is not None
        if sampling.temperature <= 0:
            continue
        scores = logits[i] / sampling.temperature
        if sampling.top_p < 1.0:  # as transformers' TopPLogitsWarper: keep the smallest set with mass >= top_p
            ordered, order = torch.sort(scores)
            drop = ordered.softmax(-1).cumsum(-1) <= 1 - sampling.top_p
            drop[-1] = False
            scores = scores.masked_fill(drop.scatter(0, order, drop), float("-inf"))
        picked[i] = int(torch.multinomial(scores.softmax(-1), 1, generator=job.rng))
    return picked


def _has_stop(job: Job, stops: Any) -> bool:
    assert job.served is not None
    text = job.served.tokenizer.decode(job.new, skip_special_tokens=True)
    return any(stop and stop in text for stop in stops)


def _fail(job: Job, exc: Exception | None) -> None:
    if job.future.done():
        return
    if exc is None:
        job.future.cancel()
    else:
        job.future.set_exception(exc)


class Batcher:
    """The schedulers of a pool's models, one per loaded model (LoRA adapters on one base share it)."""

    def __init__(self, max_batch: int, max_queue: int, text_lock: threading.Lock) -> None:
        self.max_batch, self.max_queue, self.text_lock = max_batch, max_queue, text_lock
        self.schedulers: dict[int, Scheduler] = {}
        self.lock = threading.Lock()

    def scheduler(self, served: Served) -> Scheduler:
        key = id(served.model)
        with self.lock:
            if key not in self.schedulers:
                self.schedulers[key] = Scheduler(self.max_batch, self.max_queue, self.text_lock, served.id)
            return self.schedulers[key]

    def generate(
        self, served: Served, prompt: list[int], sampling: Sampling, on_text: Callable[[str], None] | None = None
    ) -> Job:
        """Queue a generation; its ``future`` gives the ``Generation``; ``on_text`` gets text as it is decoded."""
        return self.scheduler(served).submit(Job(served, prompt, sampling, on_text))

    def call(self, served: Served, call: Callable[[], Any]) -> Job:
        """Queue a call that needs the model alone (classification)."""
        return self.scheduler(served).submit(Job(served, [], None, call=call))

    def close(self) -> None:
        for scheduler in self.schedulers.values():
            scheduler.close()
