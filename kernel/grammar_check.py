"""Refuse GBNF grammars that llama.cpp accepts but cannot run, before any engine sees them.

llama.cpp parses each of these without complaint and then fails in the process that samples with it:
- a character class that matches nothing (`[b-a]`, `[]`, `[^\\x00-\\U0010FFFF]`): an assertion or a C++ exception
  in llama-grammar.cpp ends the process (SIGABRT);
- a NUL character in a literal, or a class that matches only NUL (`"\\x00"`, `[\\x00]`): no token holds one, but
  llama.cpp's end-of-token marker (0) matches it, so it accepts a token and then finds no stack left (SIGABRT);
- a repetition whose minimum exceeds its maximum (`"x"{3,2}`): the parser loops for ever;
- a grammar in which `root` can never finish (`root ::= "x" root`, or a rule that needs an empty class): not a crash,
  but every answer runs to its token limit and is never well-formed.

The check reads the grammar the way llama.cpp's parser does (rules, alternatives, groups, literals, classes, `.`,
rule references, `* + ? {m} {m,} {m,n}`), and says in one line what is wrong. Syntax errors are left to llama.cpp's
own parser, which reports them without harm.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from .requests import EngineError

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "]": "]", "[": "[", "-": "-", "^": "^", '"': '"',
            "/": "/"}
MAX_CODE_POINT = 0x10FFFF


def _char(text: str, i: int) -> tuple[str, int]:
    """One (possibly escaped) character of a literal or class at i → (the character, the index after it)."""
    c = text[i]
    if c != "\\" or i + 1 >= len(text):
        return c, i + 1
    e = text[i + 1]
    width = {"x": 2, "u": 4, "U": 8}.get(e)
    if width:
        digits = text[i + 2 : i + 2 + width]
        try:
            return chr(min(int(digits, 16), MAX_CODE_POINT)), i + 2 + width
        except ValueError:
            return e, i + 2
    return _ESCAPES.get(e, e), i + 2


@dataclass
class _Item:
    kind: str  # "lit" | "class" | "any" | "ref" | "group"
    text: str = ""  # as written (for messages)
    ref: str = ""
    alts: list[list[_Item]] = field(default_factory=list)
    empty: bool = False  # a class that matches nothing
    nul: bool = False  # a literal that holds U+0000, or a class that matches U+0000 and nothing else
    lo: int = 1  # repetitions
    hi: int | None = 1


class _Parser:
    """Just enough of llama.cpp's GBNF parser (llama-grammar.cpp) to analyse a grammar; None on a syntax error."""

    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.rules: dict[str, list[list[_Item]]] = {}
        self.problems: list[str] = []

    def parse(self) -> dict[str, list[list[_Item]]] | None:
        try:
            self._space(newlines=True)
            while self.i < len(self.s):
                name = self._name()
                self._space()
                if not self.s.startswith("::=", self.i):
                    return None
                self.i += 3
                self._space(newlines=True)
                alts = self._alternates(nested=False)
                self.rules.setdefault(name, []).extend(alts)
                self._space(newlines=True)
        except (_Syntax, IndexError):
            return None
        return self.rules

    def _space(self, newlines: bool = False) -> None:
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c == "#":
                while self.i < len(s) and s[self.i] not in "\r\n":
                    self.i += 1
            elif c in " \t" or (newlines and c in "\r\n"):
                self.i += 1
            else:
                break

    def _name(self) -> str:
        start = self.i
        while self.i < len(self.s) and (self.s[self.i].isalnum() or self.s[self.i] in "-_"):
            self.i += 1
        if self.i == start:
            raise _Syntax
        return self.s[start:self.i]

    def _alternates(self, nested: bool) -> list[list[_Item]]:
        alts = [self._sequence(nested)]
        while self.i < len(self.s) and self.s[self.i] == "|":
            self.i += 1
            self._space(newlines=True)
            alts.append(self._sequence(nested))
        return alts

    def _sequence(self, nested: bool) -> list[_Item]:
        seq: list[_Item] = []
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            start = self.i
            if c == '"':
                self.i += 1
                chars = []
                while s[self.i] != '"':
                    ch, self.i = _char(s, self.i)
                    chars.append(ch)
                self.i += 1
                seq.append(_Item("lit", s[start:self.i], nul="\0" in chars))
            elif c == "[":
                seq.append(self._class())
            elif c == ".":
                self.i += 1
                seq.append(_Item("any", "."))
            elif c == "(":
                self.i += 1
                self._space(newlines=True)
                alts = self._alternates(nested=True)
                if s[self.i] != ")":
                    raise _Syntax
                self.i += 1
                seq.append(_Item("group", s[start:self.i], alts=alts))
            elif c.isalnum() or c in "-_":
                name = self._name()
                rest = self.i
                self._space()
                if self.s.startswith("::=", self.i):  # the next rule begins: this sequence ended a line earlier
                    self.i = start
                    return seq
                self.i = rest
                seq.append(_Item("ref", name, ref=name))
            elif c in "*+?" and seq:
                self.i += 1
                seq[-1].lo, seq[-1].hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
            elif c == "{" and seq:
                self._braces(seq[-1])
            else:
                break
            self._space(newlines=nested)  # at the top level a newline ends the rule, as in llama.cpp
        return seq

    def _class(self) -> _Item:
        s, start = self.s, self.i
        self.i += 1
        negated = s[self.i] == "^"
        if negated:
            self.i += 1
        ranges: list[tuple[int, int]] = []
        reversed_range = False
        while s[self.i] != "]":
            lo, self.i = _char(s, self.i)
            hi = lo
            if s[self.i] == "-" and s[self.i + 1] != "]":
                hi, self.i = _char(s, self.i + 1)
            reversed_range |= lo > hi
            ranges.append((ord(lo), ord(hi)))
        self.i += 1
        item = _Item("class", s[start:self.i])
        covered = _union(ranges)
        if negated:
            item.empty = covered == [(0, MAX_CODE_POINT)]
            has_nul = any(a <= 0 <= b for a, b in covered)
            item.nul = not has_nul and _union([*covered, (0, 0)]) == [(0, MAX_CODE_POINT)]  # all but NUL
        else:
            item.empty = not ranges or reversed_range
            item.nul = bool(covered) and all(b == 0 for _a, b in covered)  # NUL and nothing else
        return item

    def _braces(self, item: _Item) -> None:
        s, start = self.s, self.i
        close = s.index("}", self.i)
        body = s[self.i + 1 : close].replace(" ", "")
        self.i = close + 1
        lo_text, comma, hi_text = body.partition(",")
        if not (lo_text or hi_text) or not (lo_text.isdigit() or lo_text == "") or not (hi_text.isdigit() or
                                                                                     hi_text == ""):
            raise _Syntax
        lo = int(lo_text) if lo_text else 0
        hi = (int(hi_text) if hi_text else None) if comma else lo
        if hi is not None and lo > hi:
            self.problems.append(f"repetition {s[start:self.i]} has a minimum above its maximum")
        item.lo, item.hi = lo, hi


class _Syntax(Exception):
    pass


def _union(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(r for r in ranges if r[0] <= r[1]):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _items(alts: list[list[_Item]]):
    for seq in alts:
        for item in seq:
            yield item
            if item.kind == "group":
                yield from _items(item.alts)


def _finishing_rules(rules: dict[str, list[list[_Item]]]) -> set[str]:
    """Rules that can derive a finite string (the classic productivity fixpoint of a context-free grammar)."""
    done: set[str] = set()

    def item_ok(item: _Item) -> bool:
        if item.lo == 0:
            return True
        if item.kind == "class":
            return not item.empty
        if item.kind == "ref":
            return item.ref in done
        if item.kind == "group":
            return any(all(item_ok(i) for i in seq) for seq in item.alts)
        return True

    changed = True
    while changed:
        changed = False
        for name, alts in rules.items():
            if name not in done and any(all(item_ok(i) for i in seq) for seq in alts):
                done.add(name)
                changed = True
    return done


def grammar_problems(grammar: str) -> list[str]:
    """What makes a grammar unrunnable, most serious first (empty when it is fine or has a syntax error)."""
    return list(_problems(grammar))


@lru_cache(maxsize=128)
def _problems(grammar: str) -> tuple[str, ...]:
    """Cached by text: a tool-choice grammar (tens of KB, ~20–80 ms to read here) is the same on every call, and
    the check runs on the caller's thread, which is the kernel loop."""
    parser = _Parser(grammar)
    rules = parser.parse()
    empty = empty_classes(grammar)
    found = [f"character class {c} is empty or has an empty range" for c in empty]
    if rules is None:
        return tuple(found)
    for alts in rules.values():
        for item in _items(alts):
            if item.kind == "class" and item.empty and item.text not in empty:
                found.append(f"character class {item.text} matches no character")
            if item.nul:
                what = "holds" if item.kind == "lit" else "matches only"
                found.append(f"{item.text} {what} a NUL character, which no token can hold")
    found += parser.problems
    if not found and "root" in rules:
        finishing = _finishing_rules(rules)
        if "root" not in finishing:
            stuck = sorted(set(rules) - finishing)
            found.append(f"no string matches it: rule{'s' if len(stuck) > 1 else ''} {', '.join(stuck)} can never "
                         "end")
    return tuple(found)


def empty_classes(grammar: str) -> list[str]:
    """Character classes of a GBNF grammar that are empty or hold an empty (reversed) range: `[]`, `[b-a]`."""
    found: list[str] = []
    i, n = 0, len(grammar)
    while i < n:
        c = grammar[i]
        if c == "#":  # a comment runs to the end of the line
            while i < n and grammar[i] != "\n":
                i += 1
        elif c == '"':  # a literal: skip it, escapes included
            i += 1
            while i < n and grammar[i] != '"':
                i += 2 if grammar[i] == "\\" else 1
            i += 1
        elif c == "[":
            start = i
            i += 1
            if i < n and grammar[i] == "^":
                i += 1
            ranges: list[tuple[str, str]] = []
            while i < n and grammar[i] != "]":
                lo, i = _char(grammar, i)
                hi = lo
                if i + 1 < n and grammar[i] == "-" and grammar[i + 1] != "]":
                    hi, i = _char(grammar, i + 1)
                ranges.append((lo, hi))
            i += 1
            text = grammar[start:i]
            if not ranges or any(lo > hi for lo, hi in ranges):  # [] or a reversed range such as b-a
                found.append(text)
        else:
            i += 1
    return found


def check_grammar_text(grammar: str) -> None:
    """EngineError (one line) for a grammar llama.cpp would accept but cannot run."""
    problems = grammar_problems(grammar)
    if problems:
        raise EngineError(f"invalid grammar: {problems[0]}")
