"""Target expressions compatible with the reference (SPEC §5.2), pure: a small whitelist over Python's ``ast``.

``max(scheduled_target, ceil(claim_rate_10m * 5))``: arithmetic (``+ - * / // %``), comparisons, ``and``/``or``/
``not``, ``a if cond else b``, numbers, the variables of ``VARIABLES`` and the functions ``min``, ``max``,
``ceil``, ``floor``, ``abs`` and ``clamp(x, lo, hi)``. Nothing else parses: no attribute access, no subscripts, no
other calls, no ``**`` (a power is the one operator whose result outgrows its text), at most ``MAX_LENGTH``
characters and ``MAX_NODES`` nodes. The result must be a whole number; it is clamped to [0, 100]; any error falls
back to the scheduled target, and the source says which happened.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from prebuildd.domain.autoscale import WINDOWS

MAX_LENGTH = 500
MAX_NODES = 200
MIN_TARGET, MAX_TARGET = 0, 100

VARIABLES = (
    "scheduled_target",
    "running",
    "eligible",
    "starting",
    "stopping",
    "deleting",
    "expired",
    *(f"{kind}_{n}m" for kind in ("claims", "misses", "claim_rate") for n in WINDOWS),
    "hour",
    "weekday",
)


def _clamp(x: float, lo: float, hi: float) -> float:
    return min(max(x, lo), hi)


FUNCTIONS: dict[str, tuple[Callable[..., float], int | None]] = {
    "min": (min, None),
    "max": (max, None),
    "ceil": (math.ceil, 1),
    "floor": (math.floor, 1),
    "abs": (abs, 1),
    "clamp": (_clamp, 3),
}
"""Name -> (function, number of arguments; None: one or more)."""

_BINOPS: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Mod: lambda a, b: a % b,
}
_COMPARE: dict[type[ast.cmpop], Callable[[float, float], bool]] = {
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
}


class ExpressionError(ValueError):
    """An expression that is refused (at push) or fails (at evaluation); the message says why."""


def parse(text: str) -> ast.Expression:
    """The checked tree of ``text``; ``ExpressionError`` naming the first refused construct."""
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"is {len(text)} characters long, the limit is {MAX_LENGTH}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"is not an expression: {exc.msg}") from None
    nodes = list(ast.walk(tree))
    if len(nodes) > MAX_NODES:
        raise ExpressionError(f"has {len(nodes)} parts, the limit is {MAX_NODES}")
    for node in nodes:
        _check(node)
    return tree


def _check(node: ast.AST) -> None:
    if isinstance(node, ast.Expression | ast.Load | ast.BoolOp | ast.And | ast.Or | ast.IfExp | ast.Compare):
        return
    if isinstance(node, ast.operator | ast.cmpop | ast.unaryop):
        if type(node) in _BINOPS or type(node) in _COMPARE or isinstance(node, ast.USub | ast.UAdd | ast.Not):
            return
        raise ExpressionError(f"uses the operator {type(node).__name__}, which is not allowed")
    if isinstance(node, ast.BinOp | ast.UnaryOp):
        return
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ExpressionError(f"uses the constant {node.value!r}: only numbers are allowed")
        return
    if isinstance(node, ast.Name):
        if node.id not in VARIABLES and node.id not in FUNCTIONS:
            raise ExpressionError(f"uses the unknown name {node.id!r}")
        return
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            raise ExpressionError(
                f"calls {ast.unparse(node.func)!r}: only {', '.join(FUNCTIONS)} may be called"
            )
        _, arity = FUNCTIONS[node.func.id]
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise ExpressionError(f"{node.func.id}() takes plain arguments only")
        if (arity is None and not node.args) or (arity is not None and len(node.args) != arity):
            wanted = "at least 1" if arity is None else str(arity)
            raise ExpressionError(f"{node.func.id}() takes {wanted} argument(s), got {len(node.args)}")
        return
    if isinstance(node, ast.Attribute):
        raise ExpressionError("uses attribute access, which is not allowed")
    raise ExpressionError(f"uses {type(node).__name__}, which is not allowed")


def problem(text: str) -> str | None:
    """Why ``text`` is refused at push (None: it is a valid expression)."""
    try:
        parse(text)
    except ExpressionError as exc:
        return str(exc)
    return None


def _eval(node: ast.AST, env: Mapping[str, float]) -> float:
    if isinstance(node, ast.Expression):
        return _eval(node.body, env)
    if isinstance(node, ast.Constant):
        value = node.value
        assert isinstance(value, int | float)  # checked by parse()
        return value
    if isinstance(node, ast.Name):
        if node.id not in env:
            raise ExpressionError(f"{node.id!r} is a function, not a value")
        return env[node.id]
    if isinstance(node, ast.BinOp):
        try:
            return _BINOPS[type(node.op)](_eval(node.left, env), _eval(node.right, env))
        except ZeroDivisionError:
            raise ExpressionError("divides by zero") from None
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, env)
        if isinstance(node.op, ast.Not):
            return int(not value)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BoolOp):
        values = [_eval(v, env) for v in node.values]
        result = values[0]
        for v in values[1:]:
            result = (result and v) if isinstance(node.op, ast.And) else (result or v)
        return result
    if isinstance(node, ast.Compare):
        left = _eval(node.left, env)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = _eval(right_node, env)
            if not _COMPARE[type(op)](left, right):
                return 0
            left = right
        return 1
    if isinstance(node, ast.IfExp):
        return _eval(node.body, env) if _eval(node.test, env) else _eval(node.orelse, env)
    if isinstance(node, ast.Call):
        assert isinstance(node.func, ast.Name)
        fn, _ = FUNCTIONS[node.func.id]
        args = [_eval(a, env) for a in node.args]
        try:
            return fn(*args)
        except (ValueError, OverflowError) as exc:
            raise ExpressionError(f"{node.func.id}(): {exc}") from None
    raise ExpressionError(f"uses {type(node).__name__}, which is not allowed")


@dataclass(frozen=True)
class ExpressionResult:
    target: int
    source: str
    """``expression`` or ``expression_fallback`` (the scheduled target, because of ``error``)."""
    error: str | None = None


def evaluate(text: str, variables: Mapping[str, float], scheduled: int) -> ExpressionResult:
    """The target an expression gives with these variables, clamped to [0, 100]; the scheduled target on error."""
    try:
        value = _eval(parse(text), variables)
        if isinstance(value, float) and not math.isfinite(value):
            raise ExpressionError(f"gave {value}")
        if isinstance(value, float) and not value.is_integer():
            raise ExpressionError(f"gave {value:g}, not a whole number (use ceil or floor)")
    except ExpressionError as exc:
        return ExpressionResult(scheduled, "expression_fallback", str(exc))
    except (ArithmeticError, RecursionError) as exc:
        return ExpressionResult(scheduled, "expression_fallback", f"failed: {exc}")
    return ExpressionResult(int(min(max(value, MIN_TARGET), MAX_TARGET)), "expression")
