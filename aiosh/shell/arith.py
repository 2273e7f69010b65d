"""`$(( … ))`: bash's integer arithmetic (64-bit, C operators, assignments to shell variables).

The expression is parsed into thunks so `&&`, `||` and `?:` evaluate lazily, as in bash. Errors quote bash's
wording, including its `(error token is "…")`: the rest of the expression from where it went wrong.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from .errors import ShellError

_TOKEN = re.compile(
    r"\s*(?:(?P<num>0[xX][0-9a-fA-F]+|[0-9]+#[0-9a-zA-Z@_]+|[0-9]+)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|"
    r"(?P<op>\*\*=|<<=|>>=|\+\+|--|\*\*|<<|>>|<=|>=|==|!=|&&|\|\||[-+*/%&^|]=|[-+*/%<>=!~&^|?:(),]))"
)
_BINARY = {
    "||": 1, "&&": 2, "|": 3, "^": 4, "&": 5, "==": 6, "!=": 6, "<": 7, ">": 7, "<=": 7, ">=": 7,
    "<<": 8, ">>": 8, "+": 9, "-": 9, "*": 10, "/": 10, "%": 10, "**": 11,
}  # fmt: skip
_ASSIGN = {"=", "*=", "/=", "%=", "+=", "-=", "<<=", ">>=", "&=", "^=", "|=", "**="}

Thunk = Callable[[], int]


def _wrap(n: int) -> int:
    n &= (1 << 64) - 1
    return n - (1 << 64) if n >= 1 << 63 else n


@dataclass
class Vars:
    """How the evaluator reaches shell variables."""

    get: Callable[[str], str | None]
    set: Callable[[str, str], None]
    nounset: bool = False  # `set -u`: reading an unset variable is an error


@dataclass
class _Tok:
    kind: str  # num, name, op, end
    value: str
    start: int


class _Parser:
    def __init__(self, text: str, env: Vars, depth: int) -> None:
        self.text = text
        self.env = env
        self.depth = depth
        self.toks: list[_Tok] = []
        pos = 0
        body = text.rstrip()
        while pos < len(body):
            m = _TOKEN.match(body, pos)
            if not m or m.end() == pos:
                raise self.error(len(body) - len(body[pos:].lstrip()), "syntax error: invalid arithmetic operator")
            kind = m.lastgroup or "op"
            value = m.group(kind)
            pos = m.end()
            if kind == "name" and pos < len(body) and body[pos] == "[":
                end = _close_bracket(body, pos)
                if end < 0:
                    raise self.error(pos, "syntax error: invalid arithmetic operator")
                value = body[m.start(kind) : end + 1]
                pos = end + 1
            elif kind == "num" and pos < len(body) and (body[pos].isalnum() or body[pos] in "_@#"):
                raise self.error(m.start(kind), "value too great for base" if "#" in value else
                                 "syntax error: invalid arithmetic operator")  # fmt: skip
            self.toks.append(_Tok(kind, value, m.start(kind)))
        self.i = 0

    # -- errors and tokens -------------------------------------------------------------------------------------
    def at(self, index: int) -> int:
        """Text offset of token `index` (the end of the text past the last token)."""
        return self.toks[index].start if index < len(self.toks) else len(self.text)

    def error(self, offset: int, what: str = "syntax error: operand expected") -> ShellError:
        return ShellError(f"{self.text.lstrip()}: {what} (error token is \"{self.text[offset:]}\")", fatal=True, abort=True)

    def peek(self) -> _Tok:
        return self.toks[self.i] if self.i < len(self.toks) else _Tok("end", "", len(self.text))

    def take(self) -> _Tok:
        tok = self.peek()
        self.i += 1
        return tok

    def is_op(self, *values: str) -> bool:
        tok = self.peek()
        return tok.kind == "op" and tok.value in values

    # -- grammar (each returns a thunk) ----------------------------------------------------------------------
    def parse(self) -> int:
        if not self.toks:
            return 0
        node = self.comma()
        if self.peek().kind != "end":
            raise self.error(self.at(self.i), "syntax error in expression")
        return node()

    def comma(self) -> Thunk:
        node = self.assign()
        while self.is_op(","):
            self.take()
            node = _seq(node, self.assign())
        return node

    def assign(self) -> Thunk:
        tok = self.peek()
        nxt = self.toks[self.i + 1] if self.i + 1 < len(self.toks) else None
        if tok.kind == "name" and nxt is not None and nxt.kind == "op" and nxt.value in _ASSIGN:
            self.i += 2
            name, op = tok.value, nxt.value
            rhs = self.assign()
            where = self.i

            def node() -> int:
                value = rhs() if op == "=" else self.binop(op[:-1], self.var(name), rhs(), where, where)
                self.env.set(name, str(value))
                return value

            return node
        return self.ternary()

    def ternary(self) -> Thunk:
        cond = self.binary(1)
        if not self.is_op("?"):
            return cond
        self.take()
        yes = self.assign()
        if not self.is_op(":"):
            raise self.error(self.at(self.i), "syntax error: `:' expected for conditional expression")
        self.take()
        no = self.assign()
        return lambda: yes() if cond() else no()

    def binary(self, level: int) -> Thunk:
        if level > 11:
            return self.unary()
        left = self.binary(level + 1)
        while True:
            tok = self.peek()
            if tok.kind != "op" or _BINARY.get(tok.value) != level:
                return left
            self.take()
            op = tok.value
            right_at = self.i
            right = self.binary(level + 1 if op != "**" else level)
            after = self.i
            if op == "&&":
                left = _and(left, right)
            elif op == "||":
                left = _or(left, right)
            else:
                left = self._binop_thunk(op, left, right, right_at, after)

    def _binop_thunk(self, op: str, a: Thunk, b: Thunk, right_at: int, after: int) -> Thunk:
        return lambda: self.binop(op, a(), b(), right_at, after)

    def unary(self) -> Thunk:
        tok = self.peek()
        if tok.kind == "op" and tok.value in ("-", "+", "!", "~"):
            self.take()
            inner = self.unary()
            fn = {"-": lambda x: _wrap(-x), "+": lambda x: x, "!": lambda x: int(not x), "~": lambda x: ~x}
            apply = fn[tok.value]
            return lambda: apply(inner())
        if tok.kind == "op" and tok.value in ("++", "--"):
            self.take()
            name = self.peek()
            if name.kind != "name":
                raise self.error(self.at(self.i - 1 if name.kind == "end" else self.i))
            self.take()
            delta = 1 if tok.value == "++" else -1

            def pre() -> int:
                value = _wrap(self.var(name.value) + delta)
                self.env.set(name.value, str(value))
                return value

            return pre
        return self.postfix()

    def postfix(self) -> Thunk:
        tok = self.peek()
        if tok.kind == "num":
            self.take()
            number = self.number(tok)
            return lambda: number
        if tok.kind == "name":
            self.take()
            if self.is_op("++", "--"):
                delta = 1 if self.take().value == "++" else -1

                def post() -> int:
                    old = self.var(tok.value)
                    self.env.set(tok.value, str(_wrap(old + delta)))
                    return old

                return post
            return lambda: self.var(tok.value)
        if tok.kind == "op" and tok.value == "(":
            self.take()
            inner = self.comma()
            if not self.is_op(")"):
                raise self.error(self.at(self.i), "syntax error: `)' expected")
            self.take()
            return inner
        raise self.error(self.at(self.i - 1 if tok.kind == "end" and self.i else self.i))

    # -- values --------------------------------------------------------------------------------------------------
    def number(self, tok: _Tok) -> int:
        text = tok.value
        try:
            if "#" in text:
                base, digits = text.split("#", 1)
                if len(base) > 1 and base.startswith("0"):  # bash reads the base in decimal only
                    raise ShellError(f'{text}: invalid number (error token is "{text}")', fatal=True, abort=True)
                return _wrap(_based(int(base), digits))
            if text.lower().startswith("0x"):
                return _wrap(int(text, 16))
            if len(text) > 1 and text.startswith("0"):
                return _wrap(int(text, 8))
            return _wrap(int(text))
        except ValueError:  # bash names just the number here
            raise ShellError(f'{text}: value too great for base (error token is "{text}")', fatal=True, abort=True) from None

    def var(self, name: str) -> int:
        got = self.env.get(name)
        if got is None and self.env.nounset:
            raise ShellError(f"{name}: unbound variable", fatal=True, exit_status=127)
        raw = (got or "").strip()
        if not raw:
            return 0
        if self.depth > 10:
            raise ShellError(f"{name}: expression recursion level exceeded", fatal=True, abort=True)
        return _Parser(raw, self.env, self.depth + 1).parse()

    def binop(self, op: str, a: int, b: int, right_at: int, after: int) -> int:
        if op in ("/", "%"):
            if b == 0:
                raise self.error(self.at(right_at), "division by 0")
            q = abs(a) // abs(b) * (1 if (a >= 0) == (b >= 0) else -1)
            return _wrap(q) if op == "/" else _wrap(a - q * b)
        if op == "**":
            if b < 0:
                raise self.error(self.at(after if after < len(self.toks) else after - 1), "exponent less than 0")
            return _wrap(pow(a, b, 1 << 64))
        if op in ("<<", ">>"):
            return _wrap(a << (b & 63)) if op == "<<" else a >> (b & 63)
        table = {
            "+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "&": lambda: a & b,
            "|": lambda: a | b, "^": lambda: a ^ b, "==": lambda: int(a == b), "!=": lambda: int(a != b),
            "<": lambda: int(a < b), ">": lambda: int(a > b), "<=": lambda: int(a <= b), ">=": lambda: int(a >= b),
        }  # fmt: skip
        return _wrap(table[op]())


def _close_bracket(text: str, pos: int) -> int:
    """Index of the `]` matching the `[` at pos, or -1."""
    depth = 0
    for i in range(pos, len(text)):
        if text[i] == "[":
            depth += 1
        elif text[i] == "]":
            depth -= 1
            if depth == 0:
                return i
    return -1


_DIGITS64 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ@_"


def _based(base: int, digits: str) -> int:
    """`BASE#DIGITS` for bases 2…64 (letters are case-blind up to base 36, as in bash)."""
    if not 2 <= base <= 64:
        raise ValueError("invalid base")
    value = 0
    for ch in digits:
        d = _DIGITS64.find(ch if base > 36 else ch.lower())
        if d < 0 or d >= base:
            raise ValueError("value too great for base")
        value = value * base + d
    return value


def _seq(a: Thunk, b: Thunk) -> Thunk:
    def run() -> int:
        a()
        return b()

    return run


def _and(a: Thunk, b: Thunk) -> Thunk:
    return lambda: int(bool(a() and b()))


def _or(a: Thunk, b: Thunk) -> Thunk:
    return lambda: int(bool(a() or b()))


def evaluate(text: str, env: Vars) -> int:
    """Evaluate an already-expanded arithmetic expression; ShellError (fatal, as in bash) on failure."""
    return _Parser(text, env, 0).parse()
