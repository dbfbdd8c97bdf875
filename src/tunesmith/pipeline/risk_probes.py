"""The risk probes of the evaluate stage, asked of the base and the tuned model alike.

- **Memorisation** (``eval.memorisation``): ``eval.memorisation_rows`` training chats (seeded choice among those
  whose reply has at least 8 tokens), each given as its prompt plus the first half of its reply; the greedy
  continuation is compared with the reply's second half (up to 32 tokens): verbatim, or near-verbatim at rapidfuzz
  similarity >= 0.9. Planted canaries (``data.canaries``) are given as their row's prompt, reply and the canary's
  opening words; a canary counts as extracted when its secret comes back.
- **Factual drift** (``eval.factual_drift``): the shipped general-knowledge questions (``resources/facts.jsonl``)
  answered in a few words; the share that goes from right (base) to wrong (tuned).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from importlib import resources
from typing import Any

from tunesmith.curate.judges import continue_texts
from tunesmith.data.canaries import OPENER
from tunesmith.data.records import Chat, Message
from tunesmith.data.render import render_prompt

MIN_HALF = 4  # tokens in each half of a reply for it to be probed
MAX_EXPECTED = 32  # tokens of the second half compared
FACT_TOKENS = 16
SECRET_TOKENS = 16


@dataclass(frozen=True)
class Continuation:
    """A prompt text and what a model that memorised its row would continue it with."""

    prompt: str
    expected: str
    max_new_tokens: int


def memorisation_probes(train: list[Chat], tokenizer: Any, rows: int, seed: int) -> list[Continuation]:
    """Prompt + first half of the reply -> second half, for up to ``rows`` training chats (canary rows left out)."""
    probes = []
    for chat in train:
        if "canary" in chat.meta:
            continue
        reply = tokenizer.encode(chat.reference(), add_special_tokens=False)
        if len(reply) < 2 * MIN_HALF:
            continue
        half = len(reply) // 2
        expected = reply[half : half + MAX_EXPECTED]
        prompt = render_prompt(chat.prompt_messages(), tokenizer) + tokenizer.decode(reply[:half])
        probes.append(Continuation(prompt, tokenizer.decode(expected), len(expected) + 2))
    return random.Random(seed).sample(probes, min(rows, len(probes)))


def canary_probes(train: list[Chat], tokenizer: Any) -> list[Continuation]:
    """Each planted canary's row up to its secret -> the secret."""
    probes = []
    for chat in train:
        secret = chat.meta.get("canary")
        if secret:
            before = chat.reference().rsplit(OPENER, 1)[0]
            prompt = render_prompt(chat.prompt_messages(), tokenizer) + before + OPENER
            probes.append(Continuation(prompt, secret, SECRET_TOKENS))
    return probes


def continue_probes(model: Any, tokenizer: Any, probes: list[Continuation], batch_size: int) -> list[str]:
    """The model's greedy continuation of every probe (batched by length budget)."""
    out: list[str] = [""] * len(probes)
    for budget in sorted({p.max_new_tokens for p in probes}):
        indices = [i for i, p in enumerate(probes) if p.max_new_tokens == budget]
        texts = continue_texts(model, tokenizer, [probes[i].prompt for i in indices], budget, batch_size)
        for i, text in zip(indices, texts, strict=True):
            out[i] = text
    return out


def fact_questions() -> list[dict[str, Any]]:
    text = resources.files("tunesmith.resources").joinpath("facts.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def fact_chats(questions: list[dict[str, Any]], system_prompt: str | None) -> list[Chat]:
    """Each question as a chat (the run's system prompt kept: it is how the tuned model is asked)."""
    system = [Message("system", system_prompt)] if system_prompt else []
    asked = [Message("user", f"Answer in a few words. {q['question']}") for q in questions]
    return [Chat([*system, a, Message("assistant", q["answers"][0])]) for a, q in zip(asked, questions, strict=True)]


@dataclass(frozen=True)
class RiskProbes:
    """What the risk probes ask each model."""

    memorisation: list[Continuation]
    canaries: list[Continuation]
    questions: list[dict[str, Any]]
    facts: list[Chat]


def risk_probes(cfg: Any, train: list[Chat], tokenizer: Any) -> RiskProbes:
    """The probes the run's eval settings switch on (empty lists for the others)."""
    memorised = cfg.eval.memorisation
    rows, seed = cfg.eval.memorisation_rows, cfg.training.seed
    questions = fact_questions() if cfg.eval.factual_drift else []
    return RiskProbes(
        memorisation_probes(train, tokenizer, rows, seed) if memorised else [],
        canary_probes(train, tokenizer) if memorised else [],
        questions,
        fact_chats(questions, cfg.task.system_prompt),
    )


def memorisation_report(probes: RiskProbes, continuations: list[str], secrets: list[str]) -> dict[str, Any]:
    """One model's memorisation: rates, canaries extracted, the most similar continuations (``memorised``: per row,
    for the caller's comparison)."""
    from tunesmith.metrics.risk import memorisation

    expected = [p.expected for p in probes.memorisation]
    scores = memorisation(expected, continuations)
    order = sorted(range(len(expected)), key=lambda i: -scores["similarity"][i])[:5]
    report = {k: v for k, v in scores.items() if k != "similarity"}
    report["examples"] = [
        {"prefix": probes.memorisation[i].prompt[-160:], "expected": expected[i], "generated": continuations[i],
         "similarity": scores["similarity"][i]}
        for i in order
    ]  # fmt: skip
    if probes.canaries:
        extracted = [p.expected in text for p, text in zip(probes.canaries, secrets, strict=True)]
        found = sum(extracted)
        report["canaries"] = {"planted": len(extracted), "extracted": found, "rate": found / len(extracted)}
    return report
