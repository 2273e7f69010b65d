"""Finding the bracket that closes a group in shell text, past backslash escapes, quoted strings and nested groups.

The lexer (array literals, `${a[…]}` subscripts, bad `${…}`) and the glob translator (extglob `@(…)`) all scan
this way; they differ in the pair, whether quotes count, and what else may end the scan.
"""

from __future__ import annotations

__all__ = ["find_close"]


def find_close(text: str, i: int, end: int, pair: str, *, quotes: bool = False, stop: str = "") -> tuple[int, str]:
    """Scan text[i:end] for the closer of `pair` ("()", "[]", "{}") at depth 0; openers nest, a backslash skips the
    next character, and with `quotes` a '…' or "…" string is skipped whole.

    Returns (index, how): "close" at the closer, "stop" at a character of `stop` outside nested groups, "quote" at
    a quote that never closes, "end" (index `end`) when the text ran out."""
    opener, closer = pair[0], pair[1]
    depth = 0
    while i < end:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if quotes and c in "'\"":
            q = text.find(c, i + 1, end)
            if q < 0:
                return i, "quote"
            i = q + 1
            continue
        if c == opener:
            depth += 1
        elif c == closer:
            if depth == 0:
                return i, "close"
            depth -= 1
        elif depth == 0 and c in stop:
            return i, "stop"
        i += 1
    return end, "end"
