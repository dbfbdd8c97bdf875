"""The OpenAI-compatible HTTP API: /health, /v1/models, /v1/chat/completions (with ``tools``: ``server/tools.py``) and
/v1/completions (with SSE streaming), and /v1/classify for classification runs.

Every error is an OpenAI-style body ``{"error": {"message", "type", "param", "code"}}``. Requests are parsed by hand
(size-limited, then validated) so a malformed body is a 400 naming the field, never a crash.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import secrets
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from tunesmith.jobs.keys import owner_of
from tunesmith.jobs.service import owned_models
from tunesmith.server import schemas
from tunesmith.server.http import APIError, Body, read_json, schema_validate
from tunesmith.server.jobs_api import JobsFace, add_job_routes
from tunesmith.server.tools import ToolRequestError, reply_message, tool_conversation
from tunesmith.ship.batching import Batcher, Job, Overloaded
from tunesmith.ship.inference import (
    Generation,
    ModelPool,
    Sampling,
    Served,
    chat_prompt,
    text_prompt,
    tool_chat_prompt,
)

log = logging.getLogger("tunesmith.server")


@dataclass(frozen=True)
class Limits:
    max_tokens: int  # largest max_tokens a request may ask for (also the default for chat)
    max_body_bytes: int
    max_batch: int = 16  # sequences decoded together per model; 1 = one request at a time, as generate() runs it
    max_queue: int = 64  # requests waiting for a place in the batch, per model; more are refused with 503


def create_app(pool: ModelPool, limits: Limits, api_key: str | None = None, jobs: JobsFace | None = None) -> FastAPI:
    """The app; with ``jobs``, also OpenAI's files and fine-tuning API, and keys from the jobs store."""
    app = FastAPI(title="tunesmith", docs_url=None, redoc_url=None, openapi_url=None)
    started = int(time.time())
    # One scheduler thread per loaded model owns it; the pool's lock now only guards tokenizers and the model dict.
    batcher = Batcher(limits.max_batch, limits.max_queue, pool.lock)
    app.state.batcher = batcher
    app.router.on_shutdown.append(batcher.close)

    def submit(start: Callable[[], Job]) -> Job:
        try:
            return start()
        except Overloaded as exc:
            raise APIError(503, str(exc), kind="server_error", code="server_overloaded") from None

    async def finish(request: Request, start: Callable[[], Job]) -> Any:
        """Queue a job and wait for its result; a client that disconnects first cancels it."""
        job = submit(start)
        result = asyncio.ensure_future(asyncio.wrap_future(job.future))
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({result, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not result.done():
            job.cancel()
            result.cancel()
            raise APIError(499, "the client closed the request", code="client_closed_request")
        return result.result()

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        headers = {"Retry-After": "1"} if exc.status == 503 else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return JSONResponse(APIError(exc.status_code, str(exc.detail), code=code).body(), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request failed")
        error = APIError(500, f"internal error: {type(exc).__name__}", kind="server_error")
        return JSONResponse(error.body(), status_code=500)

    def authorize(request: Request) -> str:
        """The caller's owner id (its key's, with jobs; "" for the single --api-key or no key)."""
        header = request.headers.get("authorization", "")
        if api_key is None and jobs is None:
            return ""
        if not header.startswith("Bearer "):
            raise APIError(401, "Missing API key: send 'Authorization: Bearer KEY'.", code="invalid_api_key")
        given = header.removeprefix("Bearer ")
        if jobs is not None:
            owner = owner_of(jobs.store.engine, given)
            if owner is None:
                raise APIError(401, "Incorrect API key provided.", code="invalid_api_key")
            return owner
        assert api_key is not None
        if not secrets.compare_digest(given.encode(), api_key.encode()):
            raise APIError(401, "Incorrect API key provided.", code="invalid_api_key")
        return ""

    async def owner(request: Request) -> str:
        return await run_in_threadpool(authorize, request)  # a store query: off the event loop

    async def parse(request: Request, schema: type[Body]) -> tuple[Body, str]:
        caller = await owner(request)
        return schema_validate(schema, await read_json(request, limits.max_body_bytes)), caller

    def lookup(model_id: str, caller: str) -> Served:
        served = None
        if jobs is not None and jobs.models.is_fine_tuned(model_id):
            served = jobs.models.get(caller, model_id)
        elif not model_id.startswith("ft:"):
            served = pool.get(model_id)
        if served is None:
            raise APIError(
                404,
                f"The model '{model_id}' does not exist; available: {', '.join(visible(caller))}",
                param="model",
                code="model_not_found",
            )
        return served

    def visible(caller: str) -> list[str]:
        static = [m for m in pool.models if jobs is None or not jobs.models.is_fine_tuned(m)]
        return static + ([m["id"] for m in owned_models(jobs.store, caller)] if jobs is not None else [])

    def generator(model_id: str, caller: str) -> Served:
        served = lookup(model_id, caller)
        if not served.generates:
            raise APIError(
                400,
                f"The model '{model_id}' is a classifier and does not generate text; use /v1/classify",
                param="model",
                code="model_not_generative",
            )
        return served

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "models": list(pool.models)}

    @app.get("/v1/models")
    def list_models(request: Request) -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(m, started) for m in visible(authorize(request))]}

    @app.get("/v1/models/{model_id:path}")
    def get_model(model_id: str, request: Request) -> dict[str, Any]:
        caller = authorize(request)
        if model_id not in visible(caller):
            lookup(model_id, caller)  # the 404
        return _model_card(model_id, started)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        body, caller = await parse(request, schemas.ChatRequest)
        served = await run_in_threadpool(generator, body.model, caller)
        if body.uses_tools() or any(m.role == "tool" or m.tool_calls for m in body.messages):
            return await tool_completion(request, body, served)
        messages = [m.as_dict() for m in body.messages]
        prompt, sampling = await run_in_threadpool(prepare, served, lambda: chat_prompt(served, messages), body)
        if body.stream:
            chunk_id = schemas.new_id("chatcmpl")
            first = schemas.chat_chunk(chunk_id, body.model, {"role": "assistant", "content": ""}, None)
            return _sse(
                stream(submit, batcher, served, prompt, sampling),
                first=first,
                piece=lambda text: schemas.chat_chunk(chunk_id, body.model, {"content": text}, None),
                last=lambda result: schemas.chat_chunk(chunk_id, body.model, {}, result.finish_reason),
            )
        result = await finish(request, lambda: batcher.generate(served, prompt, sampling))
        return schemas.chat_completion(body.model, result)

    async def tool_completion(request: Request, body: schemas.ChatRequest, served: Served) -> Any:
        if body.stream:
            raise APIError(400, "streaming is not supported with tools; send stream: false", param="stream")
        try:
            messages, tool_list = tool_conversation(body)
        except ToolRequestError as exc:
            raise APIError(400, str(exc), param=exc.param) from None
        tokenize = lambda: tool_chat_prompt(served, messages, tool_list)  # noqa: E731
        prompt, sampling = await run_in_threadpool(prepare, served, tokenize, body)
        result = await finish(request, lambda: batcher.generate(served, prompt, sampling))
        return schemas.chat_completion(body.model, result, reply_message(result) if tool_list else None)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        body, caller = await parse(request, schemas.CompletionRequest)
        served = await run_in_threadpool(generator, body.model, caller)
        prompt, sampling = await run_in_threadpool(prepare, served, lambda: text_prompt(served, body.text()), body)
        if body.stream:
            chunk_id = schemas.new_id("cmpl")
            return _sse(
                stream(submit, batcher, served, prompt, sampling),
                first=None,
                piece=lambda text: schemas.completion_chunk(chunk_id, body.model, text, None),
                last=lambda result: schemas.completion_chunk(chunk_id, body.model, "", result.finish_reason),
            )
        result = await finish(request, lambda: batcher.generate(served, prompt, sampling))
        return schemas.completion(body.model, result)

    @app.post("/v1/classify")
    async def classify(request: Request) -> Any:
        body, caller = await parse(request, schemas.ClassifyRequest)
        served = await run_in_threadpool(lookup, body.model, caller)
        if served.classify is None:
            raise APIError(
                400,
                f"The model '{body.model}' is not a classification run; use /v1/chat/completions",
                param="model",
                code="model_not_classifier",
            )
        texts = body.texts()
        classify = served.classify
        results = await finish(request, lambda: batcher.call(served, lambda: classify(texts)))
        return schemas.classification(body.model, results)

    def prepare(
        served: Served, tokenize: Callable[[], list[int]], body: schemas.ChatRequest | schemas.CompletionRequest
    ) -> tuple[list[int], Sampling]:
        """Tokenize the prompt (under the lock: tokenizers are shared) and check the token budget."""
        with pool.lock:
            prompt = tokenize()
        room = (served.max_context - len(prompt)) if served.max_context else limits.max_tokens
        asked = body.token_limit()
        param = "max_completion_tokens" if getattr(body, "max_completion_tokens", None) else "max_tokens"
        if asked is not None and asked > limits.max_tokens:
            raise APIError(400, f"{param} is {asked}; this server allows at most {limits.max_tokens}", param=param)
        if room <= 0 or (asked is not None and asked > room):
            raise APIError(
                400,
                f"the prompt has {len(prompt)} tokens and the model's context is {served.max_context}; "
                f"{max(room, 0)} tokens are left for the reply",
                param="messages" if isinstance(body, schemas.ChatRequest) else "prompt",
                code="context_length_exceeded",
            )
        sampling = Sampling(
            max_new_tokens=min(asked or limits.max_tokens, room),
            temperature=body.temperature,
            top_p=body.top_p,
            seed=body.seed,
            stop=body.stops(),
        )
        return prompt, sampling

    if jobs is not None:
        add_job_routes(app, jobs, owner, limits.max_body_bytes)
    return app


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone (the body is read already, so the next ASGI message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class BatchStream:
    """A queued generation read piece by piece: ("text", str) events, then ("done", Generation) or ("error", exc).

    ``cancel()`` drops the sequence from the batch at the next step: used when a client disconnects.
    """

    def __init__(
        self, submit: Callable[[Callable[[], Job]], Job], batcher: Batcher, served: Served, prompt: list[int],
        sampling: Sampling,
    ) -> None:  # fmt: skip
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.job = submit(lambda: batcher.generate(served, prompt, sampling, self._put_text))
        self.job.future.add_done_callback(self._done)

    def _put_text(self, text: str) -> None:
        self.events.put(("text", text))

    def _done(self, future: Future[Generation]) -> None:
        if future.cancelled():
            self.events.put(("error", CancelledError()))
        elif future.exception() is not None:
            self.events.put(("error", future.exception()))
        else:
            self.events.put(("done", future.result()))

    def next(self) -> tuple[str, Any]:
        return self.events.get()

    def cancel(self) -> None:
        self.job.cancel()


def stream(
    submit: Callable[[Callable[[], Job]], Job], batcher: Batcher, served: Served, prompt: list[int], sampling: Sampling
) -> BatchStream:
    return BatchStream(submit, batcher, served, prompt, sampling)


def _sse(
    tokens: BatchStream,
    first: dict[str, Any] | None,
    piece: Callable[[str], dict[str, Any]],
    last: Callable[[Generation], dict[str, Any]],
) -> StreamingResponse:
    async def events() -> AsyncIterator[str]:
        # An async generator: when the client disconnects, starlette cancels it at its await, and `finally` stops
        # the generation at once (a sync iterator would only be closed when garbage-collected).
        try:
            if first is not None:
                yield _event(first)
            while True:
                kind, value = await run_in_threadpool(tokens.next)
                if kind == "text":
                    yield _event(piece(value))
                    continue
                if kind == "done":
                    yield _event({**last(value), "usage": schemas.usage(value)})
                else:  # headers are sent: report the failure in the stream, as OpenAI does
                    yield _event(
                        APIError(500, f"generation failed: {type(value).__name__}", kind="server_error").body()
                    )
                break
            yield "data: [DONE]\n\n"
        finally:
            tokens.cancel()

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _event(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def _model_card(model_id: str, created: int) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "tunesmith"}
