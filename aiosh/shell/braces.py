"""Brace expansion (`a{b,c}d`, `{1..5}`, `{a..e..2}`, `{01..10}`): one word becomes several, before any other
expansion, as in bash. Only unquoted braces and commas count, so `"{a,b}"` and `\\{a,b}` stay as they are.
"""

from __future__ import annotations

import dataclasses
import re

from .errors import ShellError
from .nodes import Lit, Param, Part, Word

Atom = tuple[str | None, Part | None, bool]  # (char, opaque part, active): active = an unquoted literal char

_NUM_SEQ = re.compile(r"(-?\d+)\.\.(-?\d+)(?:\.\.(-?\d+))?")
_CHAR_SEQ = re.compile(r"([A-Za-z])\.\.([A-Za-z])(?:\.\.(-?\d+))?")
MAX_WORDS = 500_000  # `{1..999999999}` would otherwise eat the memory: past this, an error (status 2)


def brace_expand(word: Word) -> list[Word]:
    if not any(isinstance(p, Lit) and not p.quoted and "{" in p.text for p in word.parts):
        return [word]
    atoms: list[Atom] = []
    for p in word.parts:
        if isinstance(p, Lit) and (p.text or not p.quoted):
            atoms.extend((c, None, not p.quoted) for c in p.text)
        else:  # an expansion, or `''` (it keeps an otherwise empty word: `{X,}''`)
            atoms.append((None, p, False))
    if _first_brace(atoms) is None:
        return [word]
    results = _expand(atoms)
    return [_to_word(r, word.raw) for r in results]


def _expand(atoms: list[Atom]) -> list[list[Atom]]:
    found = _first_brace(atoms)
    if found is None:
        return [atoms]
    i, j, alternatives = found
    out: list[list[Atom]] = []
    for alt in alternatives:
        out.extend(_expand(atoms[:i] + alt + atoms[j + 1 :]))
        if len(out) > MAX_WORDS:
            raise ShellError(f"brace expansion: more than {MAX_WORDS} words", 2)
    return out


def _first_brace(atoms: list[Atom]) -> tuple[int, int, list[list[Atom]]] | None:
    """The first `{…}` that is a brace expression: (start, end, alternatives)."""
    for i, (c, _p, active) in enumerate(atoms):
        if c != "{" or not active:
            continue
        depth = 0
        commas: list[int] = []
        for j in range(i + 1, len(atoms)):
            cj, _pj, aj = atoms[j]
            if not aj:
                continue
            if cj == "{":
                depth += 1
            elif cj == "}":
                if depth == 0:
                    if commas:
                        bounds = [i, *commas, j]
                        return i, j, [atoms[a + 1 : b] for a, b in zip(bounds, bounds[1:])]
                    seq = _sequence(atoms[i + 1 : j])
                    if seq is not None:
                        return i, j, seq
                    break
                depth -= 1
            elif cj == "," and depth == 0:
                commas.append(j)
    return None


def _sequence(inner: list[Atom]) -> list[list[Atom]] | None:
    if not all(active for _c, _p, active in inner):
        return None
    text = "".join(c or "" for c, _p, _a in inner)
    m = _NUM_SEQ.fullmatch(text)
    if m:
        lo, hi = int(m.group(1)), int(m.group(2))
        step = abs(int(m.group(3) or 1)) or 1
        width = max(len(g) for g in m.group(1, 2)) if any(_padded(g) for g in m.group(1, 2)) else 0
        values = range(lo, hi + 1, step) if lo <= hi else range(lo, hi - 1, -step)
        if len(values) > MAX_WORDS:
            raise ShellError(f"brace expansion: more than {MAX_WORDS} words", 2)
        words = [(f"{v:0{width}d}" if width else str(v)) for v in values]
    else:
        m = _CHAR_SEQ.fullmatch(text)
        if not m:
            return None
        lo, hi = ord(m.group(1)), ord(m.group(2))
        step = abs(int(m.group(3) or 1)) or 1
        values = range(lo, hi + 1, step) if lo <= hi else range(lo, hi - 1, -step)
        words = [chr(v) for v in values]
    return [[(ch, None, False) for ch in w] for w in words]


def _padded(number: str) -> bool:
    digits = number.lstrip("-")
    return len(digits) > 1 and digits.startswith("0")


def _to_word(atoms: list[Atom], raw: str) -> Word:
    parts: list[Part] = []
    for c, p, active in atoms:
        if p is not None:
            parts.append(p)
            continue
        assert c is not None
        quoted = not active
        last = parts[-1] if parts else None
        if active and isinstance(last, Param) and last.bare and (c.isalnum() or c == "_") and c.isascii():
            parts[-1] = dataclasses.replace(last, name=last.name + c)  # the text is joined first, as in bash
            continue
        if parts and isinstance(parts[-1], Lit) and parts[-1].quoted == quoted:
            parts[-1] = Lit(parts[-1].text + c, quoted)
        else:
            parts.append(Lit(c, quoted))
    from .lexer import tilde_word  # tilde expansion comes after brace expansion: `~{/src,root}`

    return Word(tilde_word(parts), raw)
