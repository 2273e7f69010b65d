"""`$(( … ))`: bash's integer arithmetic (64-bit, C operators, assignments to shell variables)."""

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


def _wrap(n: int) -> int:
    n &= (1 << 64) - 1
    return n - (1 << 64) if n >= 1 << 63 else n


@dataclass
class Vars:
    """How the evaluator reaches shell variables."""

    get: Callable[[str], str | None]
    set: Callable[[str, str], None]


class _Parser:
    def __init__(self, text: str, env: Vars, depth: int) -> None:
        self.text = text
        self.env = env
        self.depth = depth
        self.toks: list[tuple[str, str]] = []
        pos = 0
        text = text.rstrip()
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos:
                raise self.error(text[pos:].strip(), "syntax error: invalid arithmetic operator")
            kind = m.lastgroup or "op"
            self.toks.append((kind, m.group(kind)))
            pos = m.end()
        self.i = 0

    def error(self, token: str, what: str = "syntax error: operand expected") -> ShellError:
        return ShellError(f"{self.text.strip()}: {what} (error token is \"{token}\")")

    def peek(self) -> tuple[str, str]:
        return self.toks[self.i] if self.i < len(self.toks) else ("end", "")

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        self.i += 1
        return tok

    def rest(self) -> str:
        return " ".join(v for _, v in self.toks[self.i :])

    # Each parse_* returns a thunk so that && || ?: evaluate lazily, as bash does.
    def parse(self) -> int:
        if not self.toks:
            return 0
        node = self.comma()
        if self.peek()[0] != "end":
            raise self.error(self.rest(), "syntax error in expression")
        return node()

    def comma(self) -> Callable[[], int]:
        node = self.assign()
        while self.peek() == ("op", ","):
            self.take()
            left, right = node, self.assign()

            def node(left=left, right=right) -> int:
                left()
                return right()

        return node

    def assign(self) -> Callable[[], int]:
        kind, val = self.peek()
        if kind == "name" and self.i + 1 < len(self.toks) and self.toks[self.i + 1][1] in _ASSIGN:
            self.take()
            op = self.take()[1]
            rhs = self.assign()

            def node() -> int:
                value = rhs() if op == "=" else self.binop(op[:-1], self.var(val), rhs())
                self.env.set(val, str(value))
                return value

            return node
        return self.ternary()

    def ternary(self) -> Callable[[], int]:
        cond = self.binary(1)
        if self.peek() != ("op", "?"):
            return cond
        self.take()
        yes = self.assign()
        if self.take() != ("op", ":"):
            raise self.error(self.rest(), "syntax error: `:' expected for conditional expression")
        no = self.assign()
        return lambda: yes() if cond() else no()

    def binary(self, level: int) -> Callable[[], int]:
        if level > 11:
            return self.unary()
        left = self.binary(level + 1)
        while True:
            kind, op = self.peek()
            if kind != "op" or _BINARY.get(op) != level:
                return left
            self.take()
            right = self.binary(level + 1 if op != "**" else level)
            if op == "&&":
                left = (lambda a, b: lambda: int(bool(a() and b())))(left, right)
            elif op == "||":
                left = (lambda a, b: lambda: int(bool(a() or b())))(left, right)
            else:
                left = (lambda a, b, o: lambda: self.binop(o, a(), b()))(left, right, op)

    def unary(self) -> Callable[[], int]:
        kind, val = self.peek()
        if kind == "op" and val in ("-", "+", "!", "~"):
            self.take()
            inner = self.unary()
            fn = {"-": lambda x: _wrap(-x), "+": lambda x: x, "!": lambda x: int(not x), "~": lambda x: ~x}[val]
            return lambda: fn(inner())
        if kind == "op" and val in ("++", "--"):
            self.take()
            kind2, name = self.take()
            if kind2 != "name":
                raise self.error(name or val)
            delta = 1 if val == "++" else -1

            def pre() -> int:
                value = _wrap(self.var(name) + delta)
                self.env.set(name, str(value))
                return value

            return pre
        return self.postfix()

    def postfix(self) -> Callable[[], int]:
        kind, val = self.take()
        if kind == "num":
            number = self.number(val)
            return lambda: number
        if kind == "name":
            if self.peek() in (("op", "++"), ("op", "--")):
                delta = 1 if self.take()[1] == "++" else -1

                def post() -> int:
                    old = self.var(val)
                    self.env.set(val, str(_wrap(old + delta)))
                    return old

                return post
            return lambda: self.var(val)
        if (kind, val) == ("op", "("):
            inner = self.comma()
            if self.take() != ("op", ")"):
                raise self.error(self.rest(), "syntax error: `)' expected")
            return inner
        raise self.error(val or self.text.strip())

    def number(self, text: str) -> int:
        try:
            if "#" in text:
                base, digits = text.split("#", 1)
                return _wrap(int(digits, int(base)))
            if text.lower().startswith("0x"):
                return _wrap(int(text, 16))
            if len(text) > 1 and text.startswith("0"):
                return _wrap(int(text, 8))
            return _wrap(int(text))
        except ValueError:
            raise self.error(text, "value too great for base") from None

    def var(self, name: str) -> int:
        raw = (self.env.get(name) or "").strip()
        if not raw:
            return 0
        if self.depth > 10:
            raise self.error(name, "expression recursion level exceeded")
        return _Parser(raw, self.env, self.depth + 1).parse()

    def binop(self, op: str, a: int, b: int) -> int:
        if op in ("/", "%"):
            if b == 0:
                raise self.error(str(b), "division by 0")
            q = abs(a) // abs(b) * (1 if (a >= 0) == (b >= 0) else -1)
            return _wrap(q) if op == "/" else _wrap(a - q * b)
        if op == "**":
            if b < 0:
                raise self.error(str(b), "exponent less than 0")
            return _wrap(pow(a, b, 1 << 64))
        if op in ("<<", ">>"):
            return _wrap(a << (b & 63)) if op == "<<" else a >> (b & 63)
        return _wrap(
            {
                "+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "&": lambda: a & b,
                "|": lambda: a | b, "^": lambda: a ^ b, "==": lambda: int(a == b), "!=": lambda: int(a != b),
                "<": lambda: int(a < b), ">": lambda: int(a > b), "<=": lambda: int(a <= b), ">=": lambda: int(a >= b),
            }[op]()  # fmt: skip
        )


def evaluate(text: str, env: Vars) -> int:
    """Evaluate an already-expanded arithmetic expression; ShellError with bash's wording on failure."""
    return _Parser(text, env, 0).parse()
