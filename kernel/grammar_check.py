"""Refuse GBNF grammars that llama.cpp accepts but cannot run: character classes that match nothing.

llama.cpp parses `root ::= [b-a]` without complaint and then aborts the process that samples with it (an assertion
in llama-grammar.cpp, SIGABRT). The kernel checks a grammar's text before any engine sees it, and says which class
is empty, in one line.
"""

from __future__ import annotations

from .requests import EngineError

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "]": "]", "[": "[", "-": "-", "^": "^", '"': '"',
            "/": "/"}


def _char(text: str, i: int) -> tuple[str, int]:
    """One (possibly escaped) character of a class at i → (the character, the index after it)."""
    c = text[i]
    if c != "\\" or i + 1 >= len(text):
        return c, i + 1
    e = text[i + 1]
    width = {"x": 2, "u": 4, "U": 8}.get(e)
    if width:
        digits = text[i + 2 : i + 2 + width]
        try:
            return chr(int(digits, 16)), i + 2 + width
        except ValueError:
            return e, i + 2
    return _ESCAPES.get(e, e), i + 2


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
    """EngineError (one line) for a grammar with a character class that matches nothing."""
    empty = empty_classes(grammar)
    if empty:
        raise EngineError(f"invalid grammar: character class {empty[0]} is empty or has an empty range")
