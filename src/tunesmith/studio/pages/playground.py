"""Playground: a tuned model and its base (or two runs) answer the same message side by side, streamed, with the same
sampling. Blind A/B mode hides which is which: a person picks the better reply (1, 2, or 3 for a tie), the studio
keeps the win rate per pair with its interval, and every judgment with a winner becomes a preference row that one
button trains on (a ``dpo`` or ``reward`` run, through the jobs service)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from tunesmith.core.errors import DataError, TunesmithError
from tunesmith.jobs.service import create_local_job
from tunesmith.ship.inference import Sampling, TokenStream, chat_prompt, generate
from tunesmith.studio.arena import Arena
from tunesmith.studio.context import OWNER, Studio, studio
from tunesmith.studio.layout import render
from tunesmith.studio.models import BASE, cache, choose
from tunesmith.studio.pages import Page
from tunesmith.studio.runs import list_runs

router = APIRouter()
MAX_PROMPTS = 1000


def arena(ts: Studio) -> Arena:
    return ts.extra("arena", lambda: Arena(ts.workspace))


@router.get("/playground", response_class=HTMLResponse, include_in_schema=False)
def page(request: Request) -> str:
    return render(request, "playground.html.j2", active="playground")


@router.get("/api/playground/models")
def models(ts: Studio = Depends(studio)) -> dict[str, Any]:
    """Every trained run, and the base model each started from."""
    out = []
    for view in list_runs(ts):
        if view.trained:
            out.append({"key": view.key, "label": view.name})
            out.append({"key": view.key + BASE, "label": f"{view.name}: base ({view.config['model']['name']})"})
    return {"models": out}


class Settings(BaseModel):
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(64, ge=1, le=2048)
    seed: int | None = 0

    def sampling(self) -> Sampling:
        return Sampling(self.max_new_tokens, self.temperature, self.top_p, self.seed)


class Ask(BaseModel):
    model: str
    message: str = Field(min_length=1, max_length=20_000)
    settings: Settings = Settings()


@router.post("/api/playground/generate")
async def ask(body: Ask, ts: Studio = Depends(studio)) -> StreamingResponse:
    """One model's reply, streamed as JSON lines: ``{"text": ...}`` pieces, then ``{"done": ..., "tokens": ...}``."""
    choice = await run_in_threadpool(choose, ts, body.model)
    pool, (served,) = await run_in_threadpool(cache(ts).served, [choice])
    prompt = chat_prompt(served, [{"role": "user", "content": body.message}])
    tokens = TokenStream(pool, served, prompt, body.settings.sampling())

    async def lines() -> AsyncIterator[str]:
        try:
            while True:
                kind, value = await run_in_threadpool(tokens.next)
                if kind == "text":
                    yield json.dumps({"text": value}) + "\n"
                elif kind == "done":
                    yield json.dumps({"done": value.finish_reason, "tokens": value.completion_tokens}) + "\n"
                    return
                else:
                    yield json.dumps({"error": f"generation failed: {type(value).__name__}: {value}"}) + "\n"
                    return
        finally:
            tokens.cancel()  # a closed tab stops the generation at its next token

    return StreamingResponse(lines(), media_type="application/x-ndjson")


class DuelRequest(BaseModel):
    a: str
    b: str
    message: str = Field(min_length=1, max_length=20_000)
    settings: Settings = Settings()


def _duel(ts: Studio, body: DuelRequest) -> dict[str, Any]:
    if body.a == body.b:
        raise TunesmithError("choose two different models to compare")
    choices = [choose(ts, body.a), choose(ts, body.b)]
    pool, served = cache(ts).served(choices)
    answers = {}
    for choice, model in zip(choices, served, strict=True):
        with pool.lock:
            reply = generate(
                model, chat_prompt(model, [{"role": "user", "content": body.message}]), body.settings.sampling()
            )
        answers[choice.key] = (choice.label, reply.text)
    duel = arena(ts).open_duel(body.message, answers, body.settings.model_dump())
    return {"id": duel.id, "replies": list(duel.replies)}


@router.post("/api/playground/duel")
async def duel(body: DuelRequest, ts: Studio = Depends(studio)) -> dict[str, Any]:
    """Both models answer; the replies come back in a random order, without saying which is which."""
    return await run_in_threadpool(_duel, ts, body)


class Judgment(BaseModel):
    id: str
    choice: Literal[1, 2, 3]  # the first reply, the second, or a tie
    judge: str = ""


@router.post("/api/playground/judge")
def judge(body: Judgment, ts: Studio = Depends(studio)) -> dict[str, Any]:
    """Record a judgment; the pair's win rate and the preference file it feeds."""
    return arena(ts).judge(body.id, body.choice, body.judge) | {"standings": arena(ts).standings()}


@router.get("/api/playground/standings")
def standings(ts: Studio = Depends(studio)) -> dict[str, Any]:
    return {"standings": arena(ts).standings()}


@router.get("/api/playground/prompts")
def prompts(file: str, ts: Studio = Depends(studio)) -> dict[str, Any]:
    """Messages to ask, from a workspace data file: each row's last user message (or its prompt, text, source)."""
    from tunesmith.data.load import read_rows

    path = ts.workspace.path(file, "prompts file", must_exist=True)
    rows, _, _ = read_rows(path)
    found = [p for p in (_prompt_of(row.values) for row in rows) if p][:MAX_PROMPTS]
    if not found:
        raise DataError(f"{file}: no prompts found (rows with messages, prompt, instruction, question or text)")
    return {"prompts": found}


def _prompt_of(values: dict[str, Any]) -> str | None:
    """A row's prompt: its last user message (``messages``, or ``prompt`` as messages), else a text column."""
    for name in ("messages", "prompt"):
        messages = values.get(name)
        if isinstance(messages, list):
            users = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
            if users and isinstance(users[-1], str):
                return users[-1]
    for name in ("prompt", "instruction", "question", "text", "sentence", "source"):
        value = values.get(name)
        if isinstance(value, str) and value.strip():
            return value
    return None


class TrainRequest(BaseModel):
    a: str
    b: str
    task: Literal["dpo", "reward"] = "dpo"
    max_steps: int = Field(30, ge=1, le=100_000)
    learning_rate: float = Field(5e-5, gt=0)
    name: str = Field("", max_length=80)


@router.post("/api/playground/train")
def train(body: TrainRequest, ts: Studio = Depends(studio)) -> dict[str, Any]:
    """Start a dpo (or reward) run on the pair's preference rows, from the base model the first model started from."""
    file = arena(ts).preference_file((body.a, body.b))
    rows = sum(1 for _ in file.open(encoding="utf-8")) if file.is_file() else 0
    if rows < 2:
        raise TunesmithError(f"{ts.workspace.relative(file)} has {rows} preference rows; judge a few more pairs first")
    base = choose(ts, body.a).base_model
    name = body.name or f"{body.task}-feedback-{time.strftime('%Y%m%d-%H%M%S')}"
    config = {
        "model": {"name": base},
        "data": {"train": str(file), "format": "preference"},
        "task": {"name": body.task},
        "method": {"name": "lora"},
        "training": {"max_steps": body.max_steps, "learning_rate": body.learning_rate, "batch_size": 4},
        "eval": {"enabled": False},
    }
    job = create_local_job(ts.store, OWNER, config, {"name": name, "source": "blind A/B"})
    return {"job": job["id"], "rows": rows, "url": f"/runs/view?key={job['id']}", "file": ts.workspace.relative(file)}


PAGE = Page("playground", "Playground", router)
