"""Shell patterns (`*`, `?`, `[…]`): matching strings and globbing files under the *shell's* working folder.

Patterns arrive with quoted characters backslash-escaped, so `"*"x*` is `\\*x*`. Globbing never uses the
process's cwd (several shells share the process), and a pattern that matches nothing is left as it is, as in bash.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable

from .brackets import find_close

GLOB_CHARS = frozenset("*?[")
EXT_OPS = frozenset("@*+?!")

CLASSES = {
    "alpha": "a-zA-Z", "digit": "0-9", "alnum": "a-zA-Z0-9", "upper": "A-Z", "lower": "a-z",
    "space": r" \t\n\r\f\v", "blank": r" \t", "punct": r"!-/:-@\[-`{-~", "xdigit": "0-9A-Fa-f",
    "word": "a-zA-Z0-9_", "cntrl": r"\x00-\x1f\x7f", "print": r" -~", "graph": r"!-~",
}  # fmt: skip


def escape(text: str) -> str:
    """Make text match only itself inside a pattern."""
    return re.sub(r"([*?\[\]\\()|])", r"\\\1", text)


def unescape(pattern: str) -> str:
    return re.sub(r"\\(.)", r"\1", pattern, flags=re.S)


def has_magic(pattern: str, ext: bool = False) -> bool:
    """True when the pattern has an unescaped `*`, `?` or `[` (or, with `ext`, an extglob group)."""
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if c in GLOB_CHARS or (ext and c in EXT_OPS and pattern[i + 1 : i + 2] == "("):
            return True
        i += 1
    return False


@functools.lru_cache(maxsize=512)
def to_regex(pattern: str, *, path: bool = False, ext: bool = False) -> re.Pattern[str]:
    """Translate a pattern to a compiled regex matching a whole string; `path` keeps `*`/`?` off `/`; `ext`:
    bash's extglob forms `@(a|b)` `*(…)` `+(…)` `?(…)` `!(…)`."""
    return re.compile(_translate(pattern, 0, len(pattern), "[^/]" if path else ".", ext, top=True), re.S)


def _translate(pattern: str, i: int, n: int, any_char: str, ext: bool, *, top: bool = False) -> str:
    out: list[str] = []
    while i < n:
        c = pattern[i]
        if ext and c in EXT_OPS and i + 1 < n and pattern[i + 1] == "(":
            close = _close_paren(pattern, i + 1, n)
            if close is not None:
                alts = "|".join(_translate(pattern, a, b, any_char, ext) for a, b in _alternatives(pattern, i + 2, close))
                if c == "!":
                    rest = _translate(pattern, close + 1, n, any_char, ext, top=top)
                    tail = rest + "\\Z" if top else ""
                    out.append(f"(?:(?!(?:{alts}){tail}){any_char}*?){rest}")
                    return "".join(out)
                out.append(f"(?:{alts})" + {"@": "", "*": "*", "+": "+", "?": "?"}[c])
                i = close + 1
                continue
        if c == "\\" and i + 1 < n:
            out.append(re.escape(pattern[i + 1]))
            i += 2
        elif c == "*":
            out.append(any_char + "*")
            i += 1
        elif c == "?":
            out.append(any_char)
            i += 1
        elif c == "[":
            cls, i = _bracket(pattern, i, n)
            out.append(cls)
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def _close_paren(pattern: str, i: int, n: int) -> int | None:
    """The `)` closing the `(` at pattern[i], skipping escapes and nested groups; None when unclosed."""
    close, how = find_close(pattern, i + 1, n, "()")
    return close if how == "close" else None


def _alternatives(pattern: str, i: int, end: int) -> list[tuple[int, int]]:
    """The spans of the `|`-separated patterns between i and end (top level only)."""
    spans: list[tuple[int, int]] = []
    depth = 0
    start = i
    while i < end:
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            spans.append((start, i))
            start = i + 1
        i += 1
    spans.append((start, end))
    return spans


def _bracket(pattern: str, i: int, n: int) -> tuple[str, int]:
    """Translate `[…]` starting at pattern[i] (and ending before n); an unclosed bracket is a literal `[`."""
    j = i + 1
    negate = j < n and pattern[j] in "!^"
    if negate:
        j += 1
    items: list[str] = []
    first = True
    while j < n:
        c = pattern[j]
        if c == "]" and not first:
            body = "".join(items)
            if not body:  # only empty ranges such as `[z-a]`: bash matches nothing (or, negated, anything)
                return ("[\\s\\S]" if negate else "(?!)"), j + 1
            return ("[^" if negate else "[") + body + "]", j + 1
        first = False
        if c == "[" and pattern.startswith("[:", j):
            end = pattern.find(":]", j + 2)
            name = pattern[j + 2 : end] if end > 0 else ""
            if name in CLASSES:
                items.append(CLASSES[name])
                j = end + 2
                continue
        if c == "\\" and j + 1 < n:
            c = pattern[j + 1]
            j += 1
        if j + 2 < n and pattern[j + 1] == "-" and pattern[j + 2] != "]":
            hi = pattern[j + 2]
            if hi == "\\" and j + 3 < n:
                hi = pattern[j + 3]
                j += 1
            if ord(hi) >= ord(c):
                items.append(re.escape(c) + "-" + re.escape(hi))
            j += 3
            continue
        items.append(re.escape(c))
        j += 1
    return re.escape("["), i + 1


def match(pattern: str, text: str, ext: bool = False) -> bool:
    return to_regex(pattern, ext=ext).fullmatch(text) is not None


def strip(value: str, pattern: str, op: str, ext: bool = False) -> str:
    """`${x#p}`, `${x##p}`, `${x%p}`, `${x%%p}`: remove the shortest/longest matching prefix/suffix."""
    rx = to_regex(pattern, ext=ext)
    n = len(value)
    if op in ("#", "##"):
        order = range(n + 1) if op == "#" else range(n, -1, -1)
        for i in order:
            if rx.fullmatch(value[:i]):
                return value[i:]
    else:
        order = range(n, -1, -1) if op == "%" else range(n + 1)
        for i in order:
            if rx.fullmatch(value[i:]):
                return value[:i]
    return value


def replace(value: str, pattern: str, rep: Callable[[str], str], op: str, ext: bool = False) -> str:
    """`${x/p/r}` (first), `${x//p/r}` (all), `${x/#p/r}` (prefix), `${x/%p/r}` (suffix); longest matches."""
    rx = to_regex(pattern, ext=ext)
    if op == "/#":
        for i in range(len(value), -1, -1):
            if rx.fullmatch(value[:i]):
                return rep(value[:i]) + value[i:]
        return value
    if op == "/%":
        for i in range(len(value) + 1):
            if rx.fullmatch(value[i:]):
                return value[:i] + rep(value[i:])
        return value
    if not pattern:
        return value
    out: list[str] = []
    i = 0
    n = len(value)
    while i <= n:
        end = next((j for j in range(n, i, -1) if rx.fullmatch(value[i:j])), None)
        if end is None:
            if i < n:
                out.append(value[i])
            i += 1
            continue
        out.append(rep(value[i:end]))
        i = end
        if op == "/":
            out.append(value[i:])
            return "".join(out)
    return "".join(out)


def glob(pattern: str, cwd: str, *, ext: bool = False, dotglob: bool = False, skipdots: bool = True,
         nocase: bool = False) -> list[str]:
    """Files matching the pattern, relative to cwd as the pattern was written; [] when none match.

    bash's shopts: `extglob` (ext), `dotglob` (`*` matches names starting with a dot), `globskipdots` (never
    `.` and `..`), `nocaseglob`."""
    absolute = pattern.startswith("/")
    comps = [c for c in pattern.split("/") if c]
    if not comps:
        return []
    trailing_slash = pattern.endswith("/")
    results = ["/" if absolute else ""]
    for k, comp in enumerate(comps):
        last = k == len(comps) - 1
        nxt: list[str] = []
        for base in results:
            real_base = os.path.join(cwd, base) if base else cwd
            if not has_magic(comp, ext):
                name = unescape(comp)
                cand = base + name
                if os.path.lexists(os.path.join(cwd, cand)) and (last or os.path.isdir(os.path.join(cwd, cand))):
                    nxt.append(cand if last else cand + "/")
                continue
            try:
                names = os.listdir(real_base)
            except (OSError, ValueError):
                continue
            rx = to_regex(comp, path=True, ext=ext)
            if nocase:
                rx = re.compile(rx.pattern, re.S | re.I)
            dot_ok = comp.startswith(".") or comp.startswith("\\.")
            if dot_ok and not skipdots:
                names += [".", ".."]
            for name in names:
                if name.startswith(".") and not dot_ok and (not dotglob or name in (".", "..")):
                    continue
                if rx.fullmatch(name):
                    cand = base + name
                    if last:
                        if not trailing_slash or os.path.isdir(os.path.join(cwd, cand)):
                            nxt.append(cand + ("/" if trailing_slash else ""))
                    elif os.path.isdir(os.path.join(cwd, cand)):
                        nxt.append(cand + "/")
        results = nxt
        if not results:
            return []
    return sorted(results)
