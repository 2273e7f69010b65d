"""`calculator`: arithmetic through a small AST evaluator (never `eval`), with bounded sizes.

Every size that makes Python's integers slow is bounded before the operation runs (exponents, the bits of an
integer, `round`'s digits, factorial's argument), and the tool runs in a worker process under CPU and memory
limits (`isolated=True`) that is killed on timeout: a thread cannot stop CPU-bound Python, and one that holds the
GIL freezes the whole kernel.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Annotated, Any

from aiosh.api import ToolError, tool

MAX_EXPRESSION = 500  # characters
MAX_DEPTH = 40  # nesting of the expression tree
MAX_EXPONENT = 10_000
MAX_INT_BITS = 4096  # an integer result (or intermediate) larger than this is refused
MAX_ROUND_DIGITS = 400  # round(x, n): |n| at most this (round(7, -10**7) computes 10**(10**7) first)

_BINARY: dict[type, Callable[[object, object], object]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[Any], object]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, Callable[..., object]] = {
    "sqrt": math.sqrt, "exp": math.exp, "log": math.log, "log10": math.log10, "log2": math.log2,
    "sin": math.sin, "cos": math.cos, "tan": math.tan, "asin": math.asin, "acos": math.acos, "atan": math.atan,
    "floor": math.floor, "ceil": math.ceil, "abs": abs, "round": round, "min": min, "max": max,
    "factorial": math.factorial, "hypot": math.hypot,
}
_CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}


def _number(value: object) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ToolError(f"not a number: {value!r}")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ToolError(f"result too large (more than {MAX_INT_BITS} bits)")
    if isinstance(value, float) and math.isnan(value):
        raise ToolError("result is not a number (nan)")
    return value


def _pow(base: int | float, exp: int | float) -> int | float:
    if abs(exp) > MAX_EXPONENT:
        raise ToolError(f"exponent too large (at most {MAX_EXPONENT})")
    if isinstance(base, int) and isinstance(exp, int) and exp > 0 and base not in (0, 1, -1) \
            and base.bit_length() * exp > MAX_INT_BITS + 64:
        raise ToolError(f"result too large (more than {MAX_INT_BITS} bits)")
    try:
        result = base ** exp
    except ZeroDivisionError:  # 0 to a negative power
        raise ToolError("division by zero") from None
    if isinstance(result, complex):
        raise ToolError("result is complex (a negative number to a fractional power)")
    return result


def _eval(node: ast.AST, depth: int = 0) -> int | float:
    if depth > MAX_DEPTH:
        raise ToolError(f"expression nested too deeply (more than {MAX_DEPTH} levels)")
    if isinstance(node, ast.Expression):
        return _eval(node.body, depth + 1)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ToolError(f"only numbers are allowed, not {node.value!r}")
        return _number(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left, depth + 1), _eval(node.right, depth + 1)
        if isinstance(node.op, ast.Pow):
            return _number(_pow(left, right))
        if isinstance(node.op, ast.Mult) and isinstance(left, int) and isinstance(right, int) \
                and left.bit_length() + right.bit_length() > MAX_INT_BITS + 1:
            raise ToolError(f"result too large (more than {MAX_INT_BITS} bits)")
        try:
            return _number(_BINARY[type(node.op)](left, right))
        except ZeroDivisionError:
            raise ToolError("division by zero") from None
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _number(_UNARY[type(node.op)](_eval(node.operand, depth + 1)))
    if isinstance(node, ast.Name):
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        raise ToolError(f"unknown name {node.id!r} (constants: {', '.join(_CONSTANTS)})")
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        fn = _FUNCTIONS.get(node.func.id)
        if fn is None:
            raise ToolError(f"unknown function {node.func.id!r} (functions: {', '.join(sorted(_FUNCTIONS))})")
        args = [_eval(a, depth + 1) for a in node.args]
        if fn is math.factorial and args and (not isinstance(args[0], int) or args[0] > 1000):
            raise ToolError("factorial takes an integer up to 1000")
        if fn is round and len(args) == 2 and (not isinstance(args[1], int) or abs(args[1]) > MAX_ROUND_DIGITS):
            raise ToolError(f"round: the digits must be an integer from -{MAX_ROUND_DIGITS} to {MAX_ROUND_DIGITS}")
        try:
            return _number(fn(*args))
        except (ValueError, TypeError, OverflowError) as exc:
            raise ToolError(f"{node.func.id}: {exc}") from None
    what = type(node.op).__name__ if isinstance(node, ast.BinOp | ast.UnaryOp) else type(node).__name__
    raise ToolError(f"not allowed in an arithmetic expression: {what}")


def evaluate(expression: str) -> int | float:
    """The value of an arithmetic expression, or ToolError with one line saying what is wrong."""
    text = expression.strip().replace("^", "**").replace("×", "*").replace("÷", "/")
    if not text:
        raise ToolError("empty expression")
    if len(text) > MAX_EXPRESSION:
        raise ToolError(f"expression too long (at most {MAX_EXPRESSION} characters)")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise ToolError(f"not an arithmetic expression: {expression.strip()[:60]!r}") from None
    try:
        return _eval(tree)
    except OverflowError:
        raise ToolError("result too large") from None


# What an expression may contain: the grammar keeps a model's call to these characters.
EXPRESSION = {"pattern": r"^[0-9a-z(-][0-9a-z ().,+*/%^-]{0,199}$"}


@tool(name="calculator", timeout=5, concurrency=4, example={"expression": "(2 + 3) * 4"}, isolated=True, cpu_s=3,
      memory_mb=256)
def calculator(expression: Annotated[str, EXPRESSION]) -> int | float:
    """Evaluate an arithmetic expression: + - * / // % ** (or ^), parentheses, numbers, pi, e, and sqrt, exp,
    log, log10, log2, sin, cos, tan, asin, acos, atan, floor, ceil, abs, round, min, max, factorial, hypot.

    Args:
        expression: the expression, for example "(2 + 3) * 4" or "sqrt(2) / 2"
    """
    return evaluate(expression)
