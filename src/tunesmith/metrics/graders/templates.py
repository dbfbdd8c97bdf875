"""OpenAI's grader templates: ``{{ sample.output_text }}``, ``{{ item.reference }}``, ``{{ item.a.b[0] }}``."""

from __future__ import annotations

import json
import re
from typing import Any

TEMPLATE = re.compile(r"\{\{\s*(.*?)\s*\}\}")
STEP = re.compile(r"\.([A-Za-z_][\w-]*)|\[(\d+)\]")


class TemplateError(ValueError):
    """A template names a variable the sample or item does not have."""


def render(text: str, sample: dict[str, Any], item: dict[str, Any]) -> str:
    """``text`` with every ``{{ namespace.path }}`` replaced by its value (strings as they are, others as JSON)."""
    return TEMPLATE.sub(lambda m: _text(lookup(m.group(1), sample, item)), text)


def lookup(expression: str, sample: dict[str, Any], item: dict[str, Any]) -> Any:
    """The value at ``sample.<path>`` or ``item.<path>`` (dots for keys, ``[i]`` for list positions)."""
    namespace, _, rest = expression.partition(".")
    value: Any = {"sample": sample, "item": item}.get(namespace)
    if value is None or not rest:
        raise TemplateError(f"{{{{ {expression} }}}}: expected sample.<field> or item.<field>")
    for key, index in STEP.findall("." + rest):
        try:
            value = value[key] if key else value[int(index)]
        except (KeyError, IndexError, TypeError):
            available = ", ".join(sorted(value)) if isinstance(value, dict) else type(value).__name__
            raise TemplateError(f"{{{{ {expression} }}}}: no {key or index!r} (has: {available})") from None
    return value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def make_sample(output_text: str) -> dict[str, Any]:
    """The ``sample`` namespace of one reply, as OpenAI fills it (``output_json`` when the reply is JSON)."""
    try:
        output_json = json.loads(output_text)
    except (json.JSONDecodeError, ValueError):
        output_json = None
    message = {"role": "assistant", "content": output_text}
    return {
        "output_text": output_text,
        "output_json": output_json if isinstance(output_json, dict | list) else None,
        "output_tools": [],
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
    }
