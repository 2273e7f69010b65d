"""bash's ways of quoting a value for reuse: `set`, `declare -p`, `${x@Q}`, `printf %q`."""

from __future__ import annotations

import re

SAFE = re.compile(r"[A-Za-z0-9_./:,+@%=^-]*")
_REV = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\a": "\\a", "\b": "\\b", "\f": "\\f", "\v": "\\v",
        "\x1b": "\\E", "'": "\\'", "\\": "\\\\"}  # fmt: skip


def has_controls(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def dollar_quote(text: str) -> str:
    """The `$'…'` form, which bash uses for a value with control characters."""
    inner = []
    for c in text:
        code = ord(c)
        if c in _REV:
            inner.append(_REV[c])
        elif code < 32 or code == 127:
            inner.append(f"\\{code:03o}")
        else:
            inner.append(c)
    return "$'" + "".join(inner) + "'"


def single_quote(text: str) -> str:
    """`'…'`, or `$'…'` when there are control characters (`${x@Q}`)."""
    if has_controls(text):
        return dollar_quote(text)
    return plain_single_quote(text)


def plain_single_quote(text: str) -> str:
    """`'…'` whatever the text holds, newlines included: how bash's `trap` and `alias` print (sh_single_quote)."""
    return "'" + text.replace("'", "'\\''") + "'"


def value_quote(text: str) -> str:
    """As `set` and `declare -p` show a value: bare when safe, else quoted."""
    return text if SAFE.fullmatch(text) else single_quote(text)


def double_quote(text: str) -> str:
    r"""`"…"` with `"`, `\`, `$` and backquote escaped: `declare -p`, `export -p`."""
    if has_controls(text):
        return dollar_quote(text)
    return '"' + re.sub(r'(["\\$`])', r"\\\1", text) + '"'
