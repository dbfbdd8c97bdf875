"""Prompt-format experiments (``eval.prompt_variants``): the same test rows asked with other instruction templates.

A template wraps each row's input (its last user message, as prepared): ``"Is this review positive or negative?
{input}"``. Base and tuned model answer every variant with the evaluation's decoding; the scores per variant show how
much an answer depends on the wording the model was (or was not) trained with.
"""

from __future__ import annotations

from typing import Any

from tunesmith.data.records import Chat, Message
from tunesmith.recipes.contract import ChatEvaluation


def variant_chats(chats: list[Chat], template: str) -> list[Chat]:
    """Each chat with its last user message put into ``template`` (``{input}`` is replaced; other braces are kept)."""
    result = []
    for chat in chats:
        prompt = chat.prompt_messages()
        last = prompt[-1]
        messages = [*prompt[:-1], Message(last.role, template.replace("{input}", last.content))]
        result.append(Chat([*messages, Message("assistant", chat.reference())], source=chat.source, meta=chat.meta))
    return result


def variant_replies(
    recipe: ChatEvaluation,
    model: Any,
    tokenizer: Any,
    chats: list[Chat],
    templates: list[str],
    gen: dict[str, Any],
    name: str,
) -> list[list[Any]]:
    """One list of replies per template."""
    return [
        recipe.generate_replies(model, tokenizer, variant_chats(chats, t), description=f"{name} variant {i + 1}", **gen)
        for i, t in enumerate(templates)
    ]


def variant_results(
    templates: list[str],
    score: Any,
    tuned: list[list[Any]],
    base: list[list[Any]] | None,
    original: dict[str, dict[str, float]],
) -> dict[str, Any]:
    """``prompt_variants.json``: the metrics of each template (and of the trained prompt, for reference)."""
    variants = []
    for i, template in enumerate(templates):
        entry: dict[str, Any] = {"template": template, "tuned": score(tuned[i])}
        if base is not None:
            entry["base"] = score(base[i])
        variants.append(entry)
    return {"original": original, "variants": variants}


def variant_predictions(
    templates: list[str], chats: list[Chat], tuned: list[list[Any]], base: list[list[Any]] | None
) -> list[dict[str, Any]]:
    """``prompt_variants.jsonl``: every variant's prompt and answers, row by row."""
    rows = []
    for i, template in enumerate(templates):
        for j, chat in enumerate(variant_chats(chats, template)):
            rows.append(
                {
                    "variant": i + 1,
                    "source": chat.source,
                    "input": chat.prompt_messages()[-1].content,
                    "reference": chat.reference(),
                    "base": base[i][j].text if base is not None else None,
                    "tuned": tuned[i][j].text,
                }
            )
    return rows
