"""The search space: ``{config key: distribution}`` parsed into ``Param``s and checked against the config schema
(every key a setting, every range end and choice a valid value) before any trial runs.
"""

from __future__ import annotations

import ast
import copy
import difflib
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from tunesmith.core.config import RunConfig, _section_type, validate_config
from tunesmith.core.errors import ConfigError

KINDS = ("loguniform", "uniform", "int", "logint", "choice")


@dataclass
class Param:
    """One searched config key and its distribution."""

    key: str
    kind: str  # one of KINDS
    args: tuple[Any, ...]

    def suggest(self, trial: Any) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.args))
        if self.kind in ("int", "logint"):
            step = self.args[2] if len(self.args) > 2 else 1
            return trial.suggest_int(self.key, self.args[0], self.args[1], step=step, log=self.kind == "logint")
        return trial.suggest_float(self.key, self.args[0], self.args[1], log=self.kind == "loguniform")

    def extremes(self) -> list[Any]:
        """Values that together exercise the whole range (checked against the schema before the sweep)."""
        return list(self.args) if self.kind == "choice" else [self.args[0], self.args[1]]


def parse_space(space: dict[str, Any]) -> list[Param]:
    """``{key: "loguniform(1e-5, 1e-3)" | [choices]}`` -> params; ConfigError naming the key on any problem."""
    params = []
    for key, spec in space.items():
        where = f"sweep.space.{key}"
        if isinstance(spec, list):
            kind, args = "choice", tuple(spec)
        else:
            text = str(spec).strip()
            name, sep, rest = text.partition("(")
            name = name.strip()
            if not sep or not rest.endswith(")") or name not in KINDS:
                raise ConfigError(
                    f"{where}: {spec!r} is not a distribution; expected one of loguniform(a, b), uniform(a, b), "
                    "int(a, b[, step]), logint(a, b), choice(x, y, ...) or a YAML list"
                )
            kind, args = name, _parse_args(rest[:-1], where)
        params.append(_check_param(Param(key, kind, args), where))
    return params


def _parse_args(text: str, where: str) -> tuple[Any, ...]:
    """Python literals (1e-5, 16, 'cosine'); a bare word is taken as a string (choice(cosine, linear))."""
    values = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            raise ConfigError(f"{where}: empty argument in {text!r}")
        try:
            values.append(ast.literal_eval(part))
        except (ValueError, SyntaxError):
            values.append({"true": True, "false": False, "null": None}.get(part.lower(), part))
    return tuple(values)


def _check_param(param: Param, where: str) -> Param:
    args = param.args
    if param.kind == "choice":
        if not args:
            raise ConfigError(f"{where}: choice() needs at least one value")
        if not all(a is None or isinstance(a, bool | int | float | str) for a in args):
            raise ConfigError(f"{where}: choices must be numbers, strings, booleans or null, got {list(args)}")
        return param
    numbers = param.kind in ("int", "logint") and all(isinstance(a, int) and not isinstance(a, bool) for a in args)
    numbers |= param.kind in ("uniform", "loguniform") and all(isinstance(a, int | float) for a in args)
    want = 3 if param.kind == "int" else 2
    if not numbers or not 2 <= len(args) <= want:
        kind = "integers" if param.kind in ("int", "logint") else "numbers"
        raise ConfigError(
            f"{where}: {param.kind}() takes {kind} (low, high{', step' if want == 3 else ''}), got {args}"
        )
    if args[0] >= args[1]:
        raise ConfigError(f"{where}: low ({args[0]}) must be below high ({args[1]})")
    if param.kind.startswith("log") and args[0] <= 0:
        raise ConfigError(f"{where}: {param.kind}() needs a positive low value, got {args[0]}")
    if param.kind in ("uniform", "loguniform"):
        return Param(param.key, param.kind, (float(args[0]), float(args[1])))
    return param


def check_space(base: dict[str, Any], params: list[Param]) -> None:
    """Every key must be a setting of the schema, and every range end / choice a valid value for it."""
    for param in params:
        _check_key(param.key)
        for value in param.extremes():
            raw = copy.deepcopy(base)
            set_key(raw, param.key, value)
            try:
                validate_config(raw, source=f"sweep.space.{param.key} = {value!r}")
            except ConfigError as exc:
                raise ConfigError(
                    f"{exc}\n  (the sweep tries this value; narrow the range or fix the config)"
                ) from None


def _check_key(key: str) -> None:
    model: type[BaseModel] | None = RunConfig
    parts = key.split(".")
    for depth, part in enumerate(parts):
        fields = model.model_fields if model is not None else {}
        if part not in fields:
            prefix = ".".join(parts[:depth])
            known = [f"{prefix}.{f}".lstrip(".") for f in fields]
            hint = difflib.get_close_matches(".".join(parts[: depth + 1]), known, n=1)
            did = f"; did you mean '{hint[0]}'?" if hint else (f" (allowed: {', '.join(known)})" if known else "")
            raise ConfigError(f"sweep.space: '{key}' is not a config setting{did}")
        model = _section_type(fields[part].annotation)
    if model is not None:
        raise ConfigError(f"sweep.space: '{key}' is a section, not a setting; name one of its keys")


def set_key(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    for part in key.split(".")[:-1]:
        node = node.setdefault(part, {})
    node[key.split(".")[-1]] = value


def format_value(value: Any) -> str:
    """A searched value as printed (floats to 3 significant digits, None as "-")."""
    if isinstance(value, float):
        return f"{value:.3g}"
    return "-" if value is None else str(value)
