"""Request bodies of the OpenAI-compatible API (the subset tunesmith serves) and the response objects it returns.

Unknown fields are ignored, as clients send many optional OpenAI parameters; fields we do use are validated.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tunesmith.ship.inference import Generation


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Body):
    type: Literal["text"]
    text: str


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None  # null only for an assistant message that calls tools
    tool_calls: list[dict[str, Any]] | None = None  # assistant: earlier calls (checked with the request's tools)
    tool_call_id: str | None = None  # tool: the call this message answers

    @model_validator(mode="after")
    def _content_unless_calling(self) -> ChatMessage:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("content: required (it may be null only in an assistant message with tool_calls)")
        return self

    def as_dict(self) -> dict[str, Any]:
        content = self.content or ""
        text = content if isinstance(content, str) else "".join(p.text for p in content)
        item: dict[str, Any] = {"role": "system" if self.role == "developer" else self.role, "content": text}
        if self.tool_calls is not None:
            item["tool_calls"] = self.tool_calls
        if self.tool_call_id is not None:
            item["tool_call_id"] = self.tool_call_id
        return item


class _Generate(_Body):
    model: str
    max_tokens: int | None = Field(None, gt=0)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=1, description="Only one choice per request is supported.")
    stream: bool = False
    stop: str | list[str] | None = None
    seed: int | None = None

    @field_validator("stop")
    @classmethod
    def _at_most_four(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class ChatRequest(_Generate):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, gt=0)
    tools: list[dict[str, Any]] | None = None  # OpenAI's function definitions (checked as in training data)
    tool_choice: Literal["auto", "none"] | None = None  # "required" and a named function are not supported

    def uses_tools(self) -> bool:
        return bool(self.tools) and self.tool_choice != "none"

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Generate):
    prompt: str | list[str]
    max_tokens: int | None = Field(16, gt=0)  # OpenAI's default for completions

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("exactly one prompt per request is supported")
        return value

    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def token_limit(self) -> int | None:
        return self.max_tokens


class ClassifyRequest(_Body):
    model: str
    input: str | list[str] = Field(description="One text, or a list of up to MAX_CLASSIFY_INPUTS texts.")

    @field_validator("input")
    @classmethod
    def _texts(cls, value: str | list[str]) -> str | list[str]:
        texts = [value] if isinstance(value, str) else value
        if not texts:
            raise ValueError("give at least one text to classify")
        if len(texts) > MAX_CLASSIFY_INPUTS:
            raise ValueError(f"at most {MAX_CLASSIFY_INPUTS} texts per request, got {len(texts)}")
        if any(not t.strip() for t in texts):
            raise ValueError("every text to classify must be non-empty")
        return value

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


MAX_CLASSIFY_INPUTS = 256


def classification(model: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    """One entry per input, in order: the predicted label, its probability and every label's probability."""
    return {
        "id": new_id("clf"),
        "object": "list",
        "created": int(time.time()),
        "model": model,
        "data": [
            {
                "object": "classification",
                "index": i,
                "label": r["prediction"],
                "score": r["confidence"],
                "probabilities": r["probabilities"],
            }
            for i, r in enumerate(results)
        ],
    }


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(result: Generation) -> dict[str, int]:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
    }


def chat_completion(model: str, result: Generation, message: dict[str, Any] | None = None) -> dict[str, Any]:
    """The completion object; ``message`` replaces the plain text reply (an assistant message with tool calls)."""
    finish = "tool_calls" if message and message.get("tool_calls") else result.finish_reason
    return {
        "id": new_id("chatcmpl"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message or {"role": "assistant", "content": result.text},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": usage(result),
    }


def completion(model: str, result: Generation) -> dict[str, Any]:
    return {
        "id": new_id("cmpl"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "text": result.text, "logprobs": None, "finish_reason": result.finish_reason}],
        "usage": usage(result),
    }


def chat_chunk(chunk_id: str, model: str, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def completion_chunk(chunk_id: str, model: str, text: str, finish: str | None) -> dict[str, Any]:
    return {
        "id": chunk_id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
    }
