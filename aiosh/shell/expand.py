"""Word expansion: tilde, parameters, command substitution, arithmetic, field splitting, globbing, quote removal.

Expansion works on segments `(text, kind)` where kind is 'q' (quoted: kept as is), 'l' (unquoted literal text:
globbed, not split) or 'x' (unquoted result of an expansion: split on IFS and globbed). That is what lets
`"$x"`, `$x` and `*"$x"` behave as in bash without re-scanning text for quotes.
"""

from __future__ import annotations

import os
import pwd
import re
from typing import Protocol

from . import arith, patterns
from .braces import brace_expand
from .errors import ShellError
from .lexer import is_digits
from .nodes import Arith, BadSubst, CmdSub, CommandList, Lit, Param, Part, Tilde, Word

Segment = tuple[str, str]
DEFAULT_IFS = " \t\n"


class ExpandEnv(Protocol):
    """What expansion needs from the interpreter."""

    cwd: str
    noglob: bool
    nounset: bool

    def get_var(self, name: str) -> str | None: ...
    def set_var(self, name: str, value: str) -> None: ...
    def special_param(self, name: str) -> str | None: ...
    def positional(self) -> list[str]: ...
    def command_subst(self, body: CommandList) -> str: ...


# -- public entry points -------------------------------------------------------------------------------------------


def expand_words(env: ExpandEnv, words: list[Word]) -> list[str]:
    """Command arguments and `for` lists: brace expansion, then full expansion of each resulting word."""
    out: list[str] = []
    for w in words:
        for each in brace_expand(w):
            out.extend(expand_word(env, each))
    return out


def expand_word(env: ExpandEnv, word: Word, *, glob: bool = True) -> list[str]:
    fields = _expand_fields(env, word.parts)
    split: list[list[Segment]] = []
    ifs = env.get_var("IFS")
    for f in fields:
        split.extend(_split(f, DEFAULT_IFS if ifs is None else ifs))
    out: list[str] = []
    for f in split:
        if glob and not env.noglob and any(k != "q" and patterns.has_magic(t) for t, k in f):
            pat = "".join(t if k != "q" else patterns.escape(t) for t, k in f)
            if patterns.has_magic(pat):
                found = patterns.glob(pat, env.cwd)
                if found:
                    out.extend(found)
                    continue
        out.append("".join(t for t, _ in f))
    return out


def expand_string(env: ExpandEnv, word: Word) -> str:
    """Assignments, here-documents, `case` words: no splitting, no globbing; `$@` joins with spaces."""
    fields = _expand_fields(env, word.parts, join_at=True)
    return " ".join("".join(t for t, _ in f) for f in fields)


def expand_pattern(env: ExpandEnv, word: Word) -> str:
    """A pattern (`${x#pat}`): quoted parts match literally, the rest keeps its `*?[` magic."""
    fields = _expand_fields(env, word.parts, join_at=True)
    return " ".join("".join(patterns.escape(t) if k == "q" else t for t, k in f) for f in fields)


def expand_target(env: ExpandEnv, word: Word) -> str:
    """A redirection target: must come out as exactly one field (bash: `ambiguous redirect`)."""
    fields = expand_word(env, word)
    if len(fields) != 1:
        raise ShellError(f"{word.raw}: ambiguous redirect")
    return fields[0]


# -- expansion proper ------------------------------------------------------------------------------------------


def _expand_fields(env: ExpandEnv, parts: list[Part], *, join_at: bool = False) -> list[list[Segment]]:
    """Expand parts into fields of segments; only a quoted `"$@"` makes more than one field here."""
    fields: list[list[Segment]] = [[]]
    for part in parts:
        if isinstance(part, Lit):
            fields[-1].append((part.text, "q" if part.quoted else "l"))
        elif isinstance(part, Tilde):
            fields[-1].append((_tilde(env, part.user), "q"))
        elif isinstance(part, Param):
            if part.name == "@" and part.quoted and part.op is None and not part.length and not join_at:
                args = env.positional()
                for i, a in enumerate(args):
                    if i:
                        fields.append([])
                    fields[-1].append((a, "q"))
                if not args:
                    fields[-1].append(("", "@"))  # marks "$@": vanishes unless the field has other text
                continue
            fields[-1].extend(_param(env, part))
        elif isinstance(part, CmdSub):
            text = env.command_subst(part.body).rstrip("\n")
            fields[-1].append((text, "q" if part.quoted else "x"))
        elif isinstance(part, Arith):
            expr = expand_string(env, part.expr)
            value = arith.evaluate(expr, arith.Vars(env.get_var, env.set_var))
            fields[-1].append((str(value), "q" if part.quoted else "x"))
        elif isinstance(part, BadSubst):
            raise ShellError(f"{part.text}: bad substitution", fatal=True)
    return fields


def _param(env: ExpandEnv, part: Param) -> list[Segment]:
    kind = "q" if part.quoted else "x"
    name = part.name
    if part.length:
        if name in ("@", "*"):
            return [(str(len(env.positional())), kind)]
        return [(str(len(_value(env, name) or "")), kind)]
    value = _value(env, name)
    op = part.op
    if op is None:
        if value is None and env.nounset and name not in ("@", "*"):
            raise ShellError(f"{name}: unbound variable", fatal=True, exit_status=127)
        return [(value or "", kind)]
    assert part.arg is not None
    is_set = value is not None and (value != "" or not op.startswith(":"))
    if op in (":-", "-"):
        return [(value or "", kind)] if is_set else _arg(env, part)
    if op in (":+", "+"):
        return _arg(env, part) if is_set else []
    if op in (":=", "="):
        if is_set:
            return [(value or "", kind)]
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ShellError(f"${name}: cannot assign in this way")
        new = expand_string(env, part.arg)
        env.set_var(name, new)
        return [(new, kind)]
    if op in (":?", "?"):
        if is_set:
            return [(value or "", kind)]
        msg = expand_string(env, part.arg) or "parameter null or not set"
        raise ShellError(f"{name}: {msg}", fatal=True, exit_status=127)
    text = value or ""
    if op in ("^", "^^", ",", ",,"):
        conv = str.upper if op[0] == "^" else str.lower
        return [(conv(text) if len(op) == 2 else conv(text[:1]) + text[1:], kind)]
    if op == ":":
        return [(_substring(env, text, part), kind)]
    pat = expand_pattern(env, part.arg)
    if op in ("/", "//", "/#", "/%"):
        rep = _replacement(env, part.rep)
        return [(patterns.replace(text, pat, rep, op), kind)]
    # pattern removal: # ## % %%
    return [(patterns.strip(text, pat, op), kind)]


def _replacement(env: ExpandEnv, word: Word | None):  # noqa: ANN202 - a str -> str function
    """The replacement of `${x/p/r}`: an unquoted `&` stands for the match (bash 5.2's patsub_replacement)."""
    if word is None:
        return lambda _m: ""
    segs = [seg for f in _expand_fields(env, word.parts, join_at=True) for seg in f]
    return lambda m: "".join(t if k == "q" else t.replace("&", m) for t, k in segs)


def _substring(env: ExpandEnv, text: str, part: Param) -> str:
    """`${x:offset}` / `${x:offset:length}`: arithmetic offsets, negative ones from the end."""
    assert part.arg is not None
    spec = expand_string(env, part.arg)
    if not spec.strip():
        raise ShellError(f"{part.arg.raw}: bad substitution")
    vars_ = arith.Vars(env.get_var, env.set_var)
    off_text, colon, len_text = spec.partition(":")
    n = len(text)
    off = arith.evaluate(off_text, vars_)
    start = off if off >= 0 else n + off
    if start < 0 or start > n:
        return ""
    if not colon:
        return text[start:]
    length = arith.evaluate(len_text, vars_)
    end = start + length if length >= 0 else n + length
    if end < start:
        raise ShellError(f"{len_text.strip()}: substring expression < 0", fatal=True)
    return text[start:end]


def _arg(env: ExpandEnv, part: Param) -> list[Segment]:
    """The word of `${x:-word}`: its unquoted text is split like an expansion's result when `${…}` is unquoted."""
    assert part.arg is not None
    segs: list[Segment] = []
    for f in _expand_fields(env, part.arg.parts, join_at=True):
        if segs:
            segs.append((" ", "x"))
        segs.extend(f)
    if part.quoted:
        return [(t, "q") for t, _ in segs]
    return [(t, "x" if k == "l" else k) for t, k in segs]


def _value(env: ExpandEnv, name: str) -> str | None:
    if is_digits(name) or name in "?$!#-*@0" and len(name) == 1:
        return env.special_param(name)
    return env.get_var(name)


def _tilde(env: ExpandEnv, user: str) -> str:
    if not user:
        home = env.get_var("HOME")
        if home is None:
            try:
                home = pwd.getpwuid(os.getuid()).pw_dir
            except KeyError:
                return "~"
        return home
    if user == "+":
        return env.get_var("PWD") or env.cwd
    if user == "-":
        return env.get_var("OLDPWD") or "~-"
    try:
        return pwd.getpwnam(user).pw_dir
    except KeyError:
        return "~" + user


def _split(field: list[Segment], ifs: str) -> list[list[Segment]]:
    """Field splitting (POSIX 2.6.5) of the 'x' segments of one field."""
    has_quoted = any(k == "q" for _, k in field)
    if not ifs or not any(k == "x" for _, k in field):
        if not has_quoted and not any(t for t, k in field if k != "@"):
            return []
        return [[(t, k) for t, k in field if k != "@"]]
    ws = "".join(c for c in ifs if c in " \t\n")
    other = "".join(c for c in ifs if c not in " \t\n")
    parts = []
    if other:
        parts.append(f"[{re.escape(ws)}]*[{re.escape(other)}][{re.escape(ws)}]*" if ws else f"[{re.escape(other)}]")
    if ws:
        parts.append(f"[{re.escape(ws)}]+")
    sep = re.compile("|".join(parts))
    out: list[list[Segment]] = []
    cur: list[Segment] = []
    keep = False
    for text, kind in field:
        if kind == "@":
            continue
        if kind != "x":
            cur.append((text, kind))
            keep = keep or kind == "q" or bool(text)
            continue
        pos = 0
        for m in sep.finditer(text):
            piece = text[pos : m.start()]
            if piece:
                cur.append((piece, "x"))
                keep = True
            hard = bool(other) and any(c in other for c in m.group())
            if keep or hard:
                out.append(cur)
            cur, keep = [], False
            pos = m.end()
        piece = text[pos:]
        if piece:
            cur.append((piece, "x"))
            keep = True
    if keep:
        out.append(cur)
    return out
