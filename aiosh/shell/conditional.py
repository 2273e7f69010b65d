"""`[[ … ]]`: bash's conditional command — no splitting or globbing of operands, patterns after `==`/`!=`,
regular expressions after `=~` (groups into BASH_REMATCH), arithmetic for `-eq` and friends, `&&`/`||`/`!`/`()`.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from . import arith, patterns
from .builtins.flow import file_test
from .expand import expand_pattern, expand_string
from .nodes import Lit, Tilde, Word
from .state import Indexed

if TYPE_CHECKING:
    from .interp import Interp


class CondError(Exception):
    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


INT_OPS = {"-eq": "==", "-ne": "!=", "-lt": "<", "-le": "<=", "-gt": ">", "-ge": ">="}


def evaluate(interp: Interp, expr: tuple) -> bool:
    kind = expr[0]
    if kind == "and":
        return evaluate(interp, expr[1]) and evaluate(interp, expr[2])
    if kind == "or":
        return evaluate(interp, expr[1]) or evaluate(interp, expr[2])
    if kind == "not":
        return not evaluate(interp, expr[1])
    if kind == "word":
        return expand_string(interp, expr[1]) != ""
    if kind == "unary":
        return _unary(interp, expr[1], expand_string(interp, expr[2]))
    op, left, right = expr[1], expr[2], expr[3]
    a = expand_string(interp, left)
    if op in ("==", "=", "!="):
        matched = patterns.match(expand_pattern(interp, right), a, True)  # extglob is always on in [[ ]]
        return matched if op != "!=" else not matched
    if op == "=~":
        return _regex(interp, a, right)
    b = expand_string(interp, right)
    if op == "<":
        return a < b
    if op == ">":
        return a > b
    if op in INT_OPS:
        x = _int(interp, a)
        y = _int(interp, b)
        return {"==": x == y, "!=": x != y, "<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y}[INT_OPS[op]]
    return file_test(interp.state.cwd, op, a, b)


def _int(interp: Interp, text: str) -> int:
    return arith.evaluate(text, interp.variables.arith_vars()) if text.strip() else 0


def _unary(interp: Interp, op: str, arg: str) -> bool:
    if op == "-z":
        return arg == ""
    if op == "-n":
        return arg != ""
    if op == "-v":
        return interp.variables.is_set(arg)
    if op == "-o":
        return bool(getattr(interp.state, {"pipefail": "pipefail", "errexit": "errexit", "nounset": "nounset",
                                           "xtrace": "xtrace", "noglob": "noglob", "allexport": "allexport"}
                            .get(arg, "_none"), False))  # fmt: skip
    if op == "-t":
        return arg.isdigit() and os.isatty(int(arg)) if arg.isdigit() and int(arg) < 3 else False
    if op == "-a":
        op = "-e"
    return file_test(interp.state.cwd, op, arg)


def _regex(interp: Interp, text: str, right: Word) -> bool:
    """`=~`: quoted parts of the pattern match literally; the rest is an extended regular expression."""
    pieces: list[str] = []
    for part in right.parts:
        if isinstance(part, Lit):
            pieces.append(re.escape(part.text) if part.quoted else _ere(part.text))
        else:
            value = expand_string(interp, Word([part], ""))
            literal = getattr(part, "quoted", False) or isinstance(part, Tilde)
            pieces.append(re.escape(value) if literal else _ere(value))
    try:
        rx = re.compile("".join(pieces))
    except re.error:
        raise CondError("[[: invalid regular expression", 2) from None
    m = rx.search(text)
    if m is None:
        interp.state.arrays["BASH_REMATCH"] = Indexed()
        return False
    groups = [m.group(0)] + [g if g is not None else "" for g in m.groups()]
    interp.state.arrays["BASH_REMATCH"] = Indexed(dict(enumerate(groups)))
    return True


_CLASS = re.compile(r"\[:([a-z]+):\]")


def _ere(text: str) -> str:
    """POSIX ERE → Python: bracket classes `[[:alpha:]]`; the rest is shared syntax."""
    return _CLASS.sub(lambda m: patterns.CLASSES.get(m.group(1), m.group(0)), text)
