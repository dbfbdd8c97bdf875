"""Safe arithmetic formulas, as OpenAI's multi grader writes them in ``calculate_output``.

``0.5 * fuzzy + 0.5 * exact``, ``max(a, b) ^ 2``, ``min(1, sqrt(score))``: numbers, named variables, ``+ - * /``,
``^`` (power, as in OpenAI's formulas) and the functions ``min max abs floor ceil exp sqrt log``. The text is
parsed with Python's ``ast`` and every node is checked against that whitelist before anything is evaluated, so no
attribute, call, subscript or name outside it can run. Used by the config (to reject a bad formula at load time)
and by the multi grader (to compute it).
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass

FUNCTIONS: dict[str, Callable[..., float]] = {
    "min": min,
    "max": max,
    "abs": abs,
    "floor": math.floor,
    "ceil": math.ceil,
    "exp": math.exp,
    "sqrt": math.sqrt,
    "log": math.log,
}
_BINARY: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[float], float]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}
MAX_LENGTH = 1000  # a formula is a line, not a program; also bounds the parser's work


class FormulaError(ValueError):
    """The formula cannot be parsed, uses something outside the whitelist, or cannot be computed."""


@dataclass(frozen=True)
class Formula:
    """A checked formula: its text, the variables it reads, and its syntax tree."""

    text: str
    variables: frozenset[str]
    tree: ast.Expression

    def __call__(self, values: Mapping[str, float]) -> float:
        """The formula's value with ``values`` bound to its variables."""
        missing = sorted(self.variables - set(values))
        if missing:
            raise FormulaError(f"{self.text!r}: no value for {', '.join(missing)}")
        try:
            return float(_evaluate(self.tree.body, values))
        except (ArithmeticError, ValueError, TypeError) as exc:
            raise FormulaError(f"{self.text!r} cannot be computed: {exc}") from None


def parse_formula(text: str) -> Formula:
    """Parse and check a formula; raise FormulaError naming what is not allowed."""
    if len(text) > MAX_LENGTH:
        raise FormulaError(f"formula of {len(text)} characters; at most {MAX_LENGTH}")
    # OpenAI writes powers as ``^``; Python's ``^`` is xor, so it is rewritten before parsing.
    try:
        tree = ast.parse(text.replace("^", "**"), mode="eval")
    except SyntaxError as exc:
        raise FormulaError(f"{text!r} is not a formula ({exc.msg})") from None
    variables: set[str] = set()
    for node in ast.walk(tree):
        _check(node, text, variables)
    return Formula(text, frozenset(variables), tree)


def _check(node: ast.AST, text: str, variables: set[str]) -> None:
    if isinstance(node, ast.Expression | ast.Load) or type(node) in _BINARY or type(node) in _UNARY:
        return
    if isinstance(node, ast.BinOp | ast.UnaryOp):
        op = node.op
        if type(op) not in _BINARY and type(op) not in _UNARY:
            raise FormulaError(f"{text!r}: operator {type(op).__name__} is not allowed (use + - * / ^)")
        return
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise FormulaError(f"{text!r}: {node.value!r} is not a number")
        return
    if isinstance(node, ast.Name):
        if node.id not in FUNCTIONS:
            variables.add(node.id)
        return
    if isinstance(node, ast.Call):
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name not in FUNCTIONS or node.keywords or not node.args:
            raise FormulaError(f"{text!r}: only calls of {', '.join(FUNCTIONS)} with arguments are allowed")
        return
    raise FormulaError(f"{text!r}: {type(node).__name__} is not allowed in a formula")


def _evaluate(node: ast.expr, values: Mapping[str, float]) -> float:
    if isinstance(node, ast.Constant):
        return float(node.value)  # floats: ``9 ^ 9 ^ 9`` overflows at once instead of building a huge integer
    if isinstance(node, ast.Name):
        return FUNCTIONS[node.id] if node.id in FUNCTIONS else float(values[node.id])  # type: ignore[return-value]
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_evaluate(node.left, values), _evaluate(node.right, values))
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_evaluate(node.operand, values))
    if isinstance(node, ast.Call):
        assert isinstance(node.func, ast.Name)
        return FUNCTIONS[node.func.id](*(_evaluate(a, values) for a in node.args))
    raise FormulaError(f"{type(node).__name__} is not allowed in a formula")
