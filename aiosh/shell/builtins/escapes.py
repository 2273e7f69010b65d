"""Backslash escapes as echo -e, printf's format and printf's %b read them: one scanner, three sets of rules.

They differ only in the table of single-letter escapes, which octal forms count (`\\0NNN` only for echo; `\\NNN`
too for printf, where the format's `\\0NN` stops at three digits), and whether `\\c` ends all output.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..lexer import byte_char

__all__ = ["B_ARG", "ECHO", "FORMAT", "EscapeRules", "hex_escape", "unescape"]


@dataclass(frozen=True)
class EscapeRules:
    """letters: `\\n` → newline and the like; stop: `\\c` ends the output; any_octal: `\\1`..`\\7` start an octal
    escape too (not only `\\0`); zero_digits: how many digits `\\0…` takes, the 0 included."""

    letters: Mapping[str, str]
    stop: bool
    any_octal: bool
    zero_digits: int


_LETTERS = {"a": "\a", "b": "\b", "e": "\x1b", "E": "\x1b", "f": "\f", "n": "\n", "r": "\r", "t": "\t",
            "v": "\v", "\\": "\\"}  # fmt: skip
ECHO = EscapeRules(_LETTERS, stop=True, any_octal=False, zero_digits=4)
FORMAT = EscapeRules({**_LETTERS, '"': '"', "'": "'", "?": "?"}, stop=False, any_octal=True, zero_digits=3)
B_ARG = EscapeRules(_LETTERS, stop=True, any_octal=True, zero_digits=4)  # printf's %b arguments


def hex_escape(text: str, i: int) -> tuple[str, int]:
    """`\\xHH`, `\\uHHHH` or `\\UHHHHHHHH` at text[i] (echo -e, printf %b and printf's format share it): the
    character, and the index after the escape; with no hex digit the escape stays as written."""
    e = text[i + 1]
    width = {"x": 2, "u": 4, "U": 8}[e]
    j = i + 2
    while j < len(text) and j < i + 2 + width and text[j] in "0123456789abcdefABCDEF":
        j += 1
    if j == i + 2:
        return "\\" + e, j
    code = int(text[i + 2 : j], 16)
    return (byte_char(code) if e == "x" else chr(code) if code <= 0x10FFFF else "\ufffd"), j


def unescape(text: str, rules: EscapeRules) -> tuple[str, bool]:
    """The text with its escapes replaced; the bool is False when `\\c` stopped it (print nothing more)."""
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c != "\\" or i + 1 >= n:
            out.append(c)
            i += 1
            continue
        e = text[i + 1]
        if e in rules.letters:
            out.append(rules.letters[e])
            i += 2
        elif e == "c" and rules.stop:
            return "".join(out), False
        elif e == "0" or (rules.any_octal and e in "1234567"):
            j = i + 1
            limit = rules.zero_digits if e == "0" else 3
            while j < n and j < i + 1 + limit and text[j] in "01234567":
                j += 1
            out.append(byte_char(int(text[i + 1 : j], 8) & 0xFF))
            i = j
        elif e in "xuU":
            piece, i = hex_escape(text, i)
            out.append(piece)
        else:
            out.append("\\" + e)
            i += 2
    return "".join(out), True
