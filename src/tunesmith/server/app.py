"""The OpenAI-compatible HTTP API: /health, /v1/models, /v1/chat/completions (with ``tools``: ``server/tools.py``) and
/v1/completions (with SSE streaming), and /v1/classify for classification runs.

Every error is an OpenAI-style body ``{"error": {"message", "type", "param", "code"}}``. Requests are parsed by hand
(size-limited, then validated) so a malformed body is a 400 naming the field, never a crash.
"""

from __future__ import annotations

import json
import logging
import queue
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from tunesmith.server import schemas
from tunesmith.server.tools import ToolRequestError, reply_message, tool_conversation
from tunesmith.ship.inference import (
    Generation,
    ModelPool,
    Sampling,
    Served,
    chat_prompt,
    generate,
    text_prompt,
    tool_chat_prompt,
)

log = logging.getLogger("tunesmith.server")
Body = TypeVar("Body", bound=BaseModel)


@dataclass(frozen=True)
class Limits:
    max_tokens: int  # largest max_tokens a request may ask for (also the default for chat)
    max_body_bytes: int


class APIError(Exception):
    """An error returned to the client as an OpenAI-style error object."""

    def __init__(
        self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None, code: Any = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def create_app(pool: ModelPool, limits: Limits, api_key: str | None = None) -> FastAPI:
    app = FastAPI(title="tunesmith", docs_url=None, redoc_url=None, openapi_url=None)
    started = int(time.time())

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return JSONResponse(APIError(exc.status_code, str(exc.detail), code=code).body(), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request failed")
        error = APIError(500, f"internal error: {type(exc).__name__}", kind="server_error")
        return JSONResponse(error.body(), status_code=500)

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            raise APIError(401, "Missing API key: send 'Authorization: Bearer KEY'.", code="invalid_api_key")
        if not secrets.compare_digest(header.removeprefix("Bearer ").encode(), api_key.encode()):
            raise APIError(401, "Incorrect API key provided.", code="invalid_api_key")

    async def parse(request: Request, schema: type[Body]) -> Body:
        authorize(request)
        return schema_validate(schema, await read_json(request, limits.max_body_bytes))

    def lookup(model_id: str) -> Served:
        served = pool.get(model_id)
        if served is None:
            raise APIError(
                404,
                f"The model '{model_id}' does not exist; available: {', '.join(pool.models)}",
                param="model",
                code="model_not_found",
            )
        return served

    def generator(model_id: str) -> Served:
        served = lookup(model_id)
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
        authorize(request)
        return {"object": "list", "data": [_model_card(m, started) for m in pool.models]}

    @app.get("/v1/models/{model_id:path}")
    def get_model(model_id: str, request: Request) -> dict[str, Any]:
        authorize(request)
        return _model_card(lookup(model_id).id, started)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        body = await parse(request, schemas.ChatRequest)
        served = generator(body.model)
        if body.uses_tools() or any(m.role == "tool" or m.tool_calls for m in body.messages):
            return await tool_completion(body, served)
        messages = [m.as_dict() for m in body.messages]
        prompt, sampling = await run_in_threadpool(prepare, served, lambda: chat_prompt(served, messages), body)
        if body.stream:
            chunk_id = schemas.new_id("chatcmpl")
            first = schemas.chat_chunk(chunk_id, body.model, {"role": "assistant", "content": ""}, None)
            return _sse(
                stream(pool, served, prompt, sampling),
                first=first,
                piece=lambda text: schemas.chat_chunk(chunk_id, body.model, {"content": text}, None),
                last=lambda result: schemas.chat_chunk(chunk_id, body.model, {}, result.finish_reason),
            )
        result = await run_in_threadpool(locked_generate, pool, served, prompt, sampling)
        return schemas.chat_completion(body.model, result)

    async def tool_completion(body: schemas.ChatRequest, served: Served) -> Any:
        if body.stream:
            raise APIError(400, "streaming is not supported with tools; send stream: false", param="stream")
        try:
            messages, tool_list = tool_conversation(body)
        except ToolRequestError as exc:
            raise APIError(400, str(exc), param=exc.param) from None
        tokenize = lambda: tool_chat_prompt(served, messages, tool_list)  # noqa: E731
        prompt, sampling = await run_in_threadpool(prepare, served, tokenize, body)
        result = await run_in_threadpool(locked_generate, pool, served, prompt, sampling)
        return schemas.chat_completion(body.model, result, reply_message(result) if tool_list else None)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        body = await parse(request, schemas.CompletionRequest)
        served = generator(body.model)
        prompt, sampling = await run_in_threadpool(prepare, served, lambda: text_prompt(served, body.text()), body)
        if body.stream:
            chunk_id = schemas.new_id("cmpl")
            return _sse(
                stream(pool, served, prompt, sampling),
                first=None,
                piece=lambda text: schemas.completion_chunk(chunk_id, body.model, text, None),
                last=lambda result: schemas.completion_chunk(chunk_id, body.model, "", result.finish_reason),
            )
        result = await run_in_threadpool(locked_generate, pool, served, prompt, sampling)
        return schemas.completion(body.model, result)

    @app.post("/v1/classify")
    async def classify(request: Request) -> Any:
        body = await parse(request, schemas.ClassifyRequest)
        served = lookup(body.model)
        if served.classify is None:
            raise APIError(
                400,
                f"The model '{body.model}' is not a classification run; use /v1/chat/completions",
                param="model",
                code="model_not_classifier",
            )
        texts = body.texts()
        results = await run_in_threadpool(locked_classify, pool, served, texts)
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

    return app


def locked_classify(pool: ModelPool, served: Served, texts: list[str]) -> list[dict[str, Any]]:
    assert served.classify is not None
    with pool.lock:
        return served.classify(texts)


def locked_generate(pool: ModelPool, served: Served, prompt: list[int], sampling: Sampling) -> Generation:
    with pool.lock:
        return generate(served, prompt, sampling)


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


def stream(pool: ModelPool, served: Served, prompt: list[int], sampling: Sampling) -> TokenStream:
    return TokenStream(pool, served, prompt, sampling)


def _sse(
    tokens: TokenStream,
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


async def read_json(request: Request, limit: int) -> Any:
    """The request body parsed as JSON, refusing bodies over ``limit`` bytes before reading them whole."""
    declared = request.headers.get("content-length", "")
    too_big = APIError(413, f"request body too large; the limit is {limit} bytes", code="request_too_large")
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_big
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIError(400, f"the request body is not valid JSON: {exc}", code="invalid_json") from None


def schema_validate(schema: type[Body], data: Any) -> Body:
    if not isinstance(data, dict):
        raise APIError(400, f"the request body must be a JSON object, got {type(data).__name__}")
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        message = str(first["msg"]).removeprefix("Value error, ")
        more = f" (and {len(exc.errors()) - 1} more problems)" if len(exc.errors()) > 1 else ""
        raise APIError(400, f"{param}: {message}{more}", param=param) from None
