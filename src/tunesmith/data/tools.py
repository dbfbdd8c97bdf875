"""Tool use in chats, in OpenAI's format: a row's ``tools`` (function schemas), an assistant's ``tool_calls`` and the
``tool`` messages that answer them, checked as a fine-tuning file must be.

- a tool is ``{"type": "function", "function": {"name", "description"?, "parameters"?}}``; its name is unique and
  its ``parameters`` a valid JSON Schema (checked with the ``jsonschema`` library against the schema's own
  metaschema);
- a call is ``{"id", "type": "function", "function": {"name", "arguments"}}``: it names a declared tool, and its
  ``arguments`` (a JSON string, as OpenAI sends them, or an object) parse as a JSON object that validates against
  that tool's parameters;
- a ``tool`` message's ``tool_call_id`` answers an earlier call of the conversation.

Each problem is a ``RowError`` naming the field (``messages[2].tool_calls[0].function.name``) and what was expected.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from tunesmith.data.fields import RowError

NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names


@dataclass(frozen=True)
class Tools:
    """The declared tools of one conversation: their definitions (as given) and a validator per name."""

    definitions: list[dict[str, Any]]
    validators: dict[str, Any]

    def names(self) -> str:
        return ", ".join(self.validators) or "none"


def parse_tools(raw: Any, key: str = "tools") -> Tools | None:
    """A row's ``tools`` list, checked; None when the row declares none."""
    from jsonschema import SchemaError
    from jsonschema.validators import validator_for

    if raw is None:
        return None
    if not isinstance(raw, list):
        raise RowError(f"field '{key}': expected a list of tools, got {type(raw).__name__}", "invalid_tool")
    definitions, validators = [], {}
    for index, tool in enumerate(raw):
        where = f"{key}[{index}]"
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
            raise RowError(f"field '{where}': expected {{'type': 'function', 'function': {{...}}}}", "invalid_tool")
        function = tool["function"]
        name = function.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise RowError(
                f"field '{where}.function.name': expected 1-64 letters, digits, _ or -, got {name!r}", "invalid_tool"
            )
        if name in validators:
            raise RowError(f"field '{where}.function.name': tool {name!r} is declared twice", "invalid_tool")
        schema = function.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(schema, dict):
            raise RowError(f"field '{where}.function.parameters': expected a JSON Schema object", "invalid_tool")
        cls = validator_for(schema)
        try:
            cls.check_schema(schema)
        except SchemaError as exc:
            path = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in exc.path)
            raise RowError(
                f"field '{where}.function.parameters{path}': not a valid JSON Schema: {exc.message}", "invalid_tool"
            ) from None
        definitions.append(tool)
        validators[name] = cls(schema)
    return Tools(definitions, validators)


def parse_calls(raw: Any, where: str, tools: Tools | None) -> list[dict[str, Any]]:
    """An assistant message's ``tool_calls``, checked against the declared tools; arguments as a JSON string."""
    if not isinstance(raw, list) or not raw:
        raise RowError(f"field '{where}.tool_calls': expected a non-empty list of calls", "invalid_tool_call")
    calls = []
    for index, call in enumerate(raw):
        at = f"{where}.tool_calls[{index}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or call.get("type", "function") != "function":
            raise RowError(
                f"field '{at}': expected {{'id', 'type': 'function', 'function': {{'name', 'arguments'}}}}",
                "invalid_tool_call",
            )
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            raise RowError(f"field '{at}.id': expected the call's id (text)", "invalid_tool_call")
        name = function.get("name")
        if tools is None or name not in tools.validators:
            declared = f"declared tools: {tools.names()}" if tools and tools.validators else "the row declares no tools"
            raise RowError(
                f"field '{at}.function.name': {name!r} is not a declared tool ({declared})", "undeclared_tool"
            )
        arguments = _arguments(function.get("arguments"), f"{at}.function.arguments")
        problem = next(iter(tools.validators[name].iter_errors(arguments)), None)
        if problem is not None:
            path = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in problem.absolute_path)
            raise RowError(
                f"field '{at}.function.arguments{path}': {problem.message} (the parameters of {name!r})",
                "invalid_tool_arguments",
            )
        text = json.dumps(arguments, ensure_ascii=False)
        calls.append({"id": call_id, "type": "function", "function": {"name": name, "arguments": text}})
    return calls


def _arguments(raw: Any, where: str) -> dict[str, Any]:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise RowError(
                f"field '{where}': not valid JSON ({exc.msg} at column {exc.colno})", "invalid_tool_arguments"
            ) from None
    if not isinstance(raw, dict):
        raise RowError(f"field '{where}': expected a JSON object of arguments", "invalid_tool_arguments")
    return raw
