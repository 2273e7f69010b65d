"""Word expansion: tilde, parameters, command substitution, arithmetic, field splitting, globbing, quote removal.

Expansion works on segments `(text, kind)` where kind is 'q' (quoted: kept as is), 'l' (unquoted literal text:
globbed, not split) or 'x' (unquoted result of an expansion: split on IFS and globbed). That is what lets
`"$x"`, `$x` and `*"$x"` behave as in bash without re-scanning text for quotes.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import re
from typing import TYPE_CHECKING, Protocol

from . import arith, patterns
from .braces import brace_expand
from .errors import ShellError
from .lexer import is_digits
from .nodes import Arith, BadSubst, CmdSub, CommandList, Lit, Param, Part, Tilde, Word
from .quoting import single_quote

if TYPE_CHECKING:
    from .prompt import PromptSource

Segment = tuple[str, str]
DEFAULT_IFS = " \t\n"


class ExpandEnv(Protocol):
    """What expansion needs from the interpreter."""

    @property
    def cwd(self) -> str: ...
    @property
    def noglob(self) -> bool: ...
    @property
    def nounset(self) -> bool: ...

    def get_var(self, name: str) -> str | None: ...
    def set_var(self, name: str, value: str) -> None: ...
    def special_param(self, name: str) -> str | None: ...
    def positional(self) -> list[str]: ...
    def lookup(self, name: str) -> str | None: ...
    def array_values(self, name: str) -> list[str] | None: ...
    def array_keys(self, name: str) -> list[str]: ...
    def var_names(self, prefix: str) -> list[str]: ...
    def attributes(self, name: str) -> str: ...
    def command_subst(self, body: CommandList) -> str: ...
    def shopt(self, name: str) -> bool: ...
    def prompt_view(self) -> PromptSource: ...


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
    ext = env.shopt("extglob")
    for f in split:
        if glob and not env.noglob and any(k != "q" and patterns.has_magic(t, ext) for t, k in f):
            pat = "".join(t if k != "q" else patterns.escape(t) for t, k in f)
            if patterns.has_magic(pat, ext):
                found = patterns.glob(pat, env.cwd, ext=ext, dotglob=env.shopt("dotglob"),
                                      skipdots=env.shopt("globskipdots"), nocase=env.shopt("nocaseglob"))  # fmt: skip
                if found:
                    out.extend(found)
                    continue
                if env.shopt("failglob"):
                    raise ShellError(f"no match: {''.join(t for t, _ in f)}", abort=True)
                if env.shopt("nullglob"):
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
    words = brace_expand(word)
    fields = expand_word(env, words[0]) if len(words) == 1 else []
    if len(fields) != 1:
        raise ShellError(f"{word.raw}: ambiguous redirect")
    return fields[0]


# -- expansion proper ------------------------------------------------------------------------------------------


def _expand_fields(env: ExpandEnv, parts: list[Part], *, join_at: bool = False) -> list[list[Segment]]:
    """Expand parts into fields of segments; `"$@"` and `"${a[@]}"` make one field per element."""
    fields: list[list[Segment]] = [[]]
    for part in parts:
        if isinstance(part, Lit):
            fields[-1].append((part.text, "q" if part.quoted else "l"))
        elif isinstance(part, Tilde):
            fields[-1].append((_tilde(env, part.user), "q"))
        elif isinstance(part, Param):
            result = _param(env, part, join_at)
            if not result:
                fields[-1].append(("", "@"))  # marks "$@": vanishes unless the field has other text
                continue
            fields[-1].extend(result[0])
            for more in result[1:]:
                fields.append(list(more))
        elif isinstance(part, CmdSub):
            if part.error is not None:
                env.report_syntax(part.error, env.cur_io)  # type: ignore[attr-defined]
                env.subst_status = 2  # type: ignore[attr-defined]
                text = ""
            else:
                text = env.command_subst(part.body).rstrip("\n")
            fields[-1].append((text, "q" if part.quoted else "x"))
        elif isinstance(part, Arith):
            expr = expand_string(env, part.expr)
            value = arith.evaluate(expr, arith.Vars(env.get_var, env.set_var, env.nounset))
            fields[-1].append((str(value), "q" if part.quoted else "x"))
        elif isinstance(part, BadSubst):
            raise ShellError(part.message or f"{part.text}: bad substitution", fatal=True, abort=True)
    return fields


def _ifs_sep(env: ExpandEnv) -> str:
    ifs = env.get_var("IFS")
    return " " if ifs is None else ifs[:1]


def _multi_values(env: ExpandEnv, part: Param) -> tuple[list[str] | None, str]:
    """For the forms that stand for several words — `$@ $*`, `${a[@]}`, `${!a[@]}`, `${!pre*}`, `${!ref}` with
    ref=`a[@]` — the words and the joining kind (`@` or `*`); (None, "") for the single-value forms."""
    name = part.name
    idx = part.index.raw if part.index is not None else None
    if part.op in ("names*", "names@"):
        return env.var_names(name), part.op[-1]
    if part.indirect and idx in ("@", "*"):
        return env.array_keys(name), idx or "@"
    if part.indirect:
        ref = _value(env, name) if idx is None else env.lookup(f"{name}[{_subscript(env, part)}]")
        if ref is None:
            if env.nounset:
                raise ShellError(f"{name}: unbound variable", fatal=True, exit_status=127)
            return None, ""
        if ref in ("@", "*"):
            return list(env.positional()), ref
        m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)\[([@*])\]", ref)
        if m:
            return env.array_values(m.group(1)) or [], m.group(2)
        return None, ""
    if idx is None and name in ("@", "*"):
        return list(env.positional()), name
    if idx in ("@", "*"):
        return env.array_values(name) or [], idx or "@"
    return None, ""


def _subscript(env: ExpandEnv, part: Param) -> str:
    assert part.index is not None
    return expand_string(env, part.index)


def _single_value(env: ExpandEnv, part: Param) -> str | None:
    name = part.name
    if part.indirect:
        ref = _value(env, name) if part.index is None else env.lookup(f"{name}[{_subscript(env, part)}]")
        if ref is None:  # bash 5.2: `${!ref}` with ref unset is an error, not an empty value
            raise ShellError(f"{name}: invalid indirect expansion", fatal=True, abort=True)
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\[.*\])?|[0-9]+|[?$!#-]", ref, re.S):
            raise ShellError(f"{ref}: invalid indirect expansion", fatal=True, abort=True)
        return _value(env, ref) if "[" not in ref else env.lookup(ref)
    if part.index is not None:
        return env.lookup(f"{name}[{_subscript(env, part)}]")
    return _value(env, name)


def _param(env: ExpandEnv, part: Param, join_at: bool = False) -> list[list[Segment]]:
    """One `$…`/`${…}`: a list of fields (several for `"$@"`-like forms, none for an empty `"$@"`)."""
    kind = "q" if part.quoted else "x"
    values, how = _multi_values(env, part)
    if values is None:
        return _param_single(env, part, kind)
    if part.length:
        return [[(str(len(values)), kind)]]
    op = part.op
    if op is not None and not op.startswith("names"):
        assert part.arg is not None
        if op in (":-", "-", ":+", "+", ":=", "=", ":?", "?"):
            # bash's null test for the list forms: the words joined (by IFS's first character only for a quoted
            # `*` form); `${!ref:-…}` with ref=`a[@]` is null only without elements
            sep = _ifs_sep(env) if how == "*" and part.quoted else " "
            is_set = bool(values) and (not op.startswith(":") or part.indirect or sep.join(values) != "")
            if op in (":-", "-"):
                if not is_set:
                    return _arg(env, part)
            elif op in (":+", "+"):
                if is_set:
                    return _arg(env, part)
                return ([] if how == "@" else [[("", "q")]]) if part.quoted else [[]]  # "${e[@]+x}" vanishes
            elif op in (":=", "="):
                if not is_set:
                    raise ShellError(f"${part.name}: cannot assign in this way", fatal=True, abort=True)
            elif not is_set:
                msg = expand_string(env, part.arg) or "parameter null or not set"
                raise ShellError(f"{part.name}: {msg}", fatal=True, exit_status=127)
        elif op == ":":
            values = _slice_list(env, part, values)
        else:
            values = [_apply_op(env, part, v) for v in values]
    if part.quoted and not join_at:
        if how == "*":
            return [[(_ifs_sep(env).join(values), "q")]]
        return [[(v, "q")] for v in values]
    if join_at:
        sep = " " if how == "@" else _ifs_sep(env)
        return [[(sep.join(values), kind)]]
    ifs = env.get_var("IFS")
    if ifs is None or ifs:  # unquoted: joined by IFS's first character, then split like any expansion (bash)
        return [[(_ifs_sep(env).join(values), "x")]] if values else []
    if how == "*" and part.indirect and values:  # bash joins these two anyway: `${!pre*}` by IFS, `${!a[*]}` by " "
        if part.op == "names*":
            return [[("".join(values), "x")]]
        if part.index is not None:
            return [[(" ".join(values), "x")]]
    return [[(v, "x")] for v in values]  # IFS='': no splitting, but the elements stay separate words


def _param_single(env: ExpandEnv, part: Param, kind: str) -> list[list[Segment]]:
    name = part.name
    value = _single_value(env, part)
    if part.length:
        if value is None and env.nounset and not is_digits(name) and name not in "#?$!-":
            raise ShellError(f"{name}: unbound variable", fatal=True, exit_status=127)
        return [[(str(_length(env, value or "")), kind)]]
    op = part.op
    if op is None:
        if value is None and env.nounset and name not in ("@", "*"):
            raise ShellError(f"{name}: unbound variable", fatal=True, exit_status=127)
        return [[(value or "", kind)]]
    assert part.arg is not None
    is_set = value is not None and (value != "" or not op.startswith(":"))
    if op in (":-", "-"):
        return [[(value or "", kind)]] if is_set else _arg(env, part)
    if op in (":+", "+"):
        return _arg(env, part) if is_set else [[("", "q")]] if part.quoted else [[]]
    if op in (":=", "="):
        if is_set:
            return [[(value or "", kind)]]
        if part.indirect or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ShellError(f"${name}: cannot assign in this way", fatal=True, abort=True)
        new = expand_string(env, part.arg)
        target = name if part.index is None else f"{name}[{_subscript(env, part)}]"
        env.set_var(target, new)
        return [[(new, kind)]]
    if op in (":?", "?"):
        if is_set:
            return [[(value or "", kind)]]
        msg = expand_string(env, part.arg) or "parameter null or not set"
        raise ShellError(f"{name}: {msg}", fatal=True, exit_status=127)
    if value is None and env.nounset:
        raise ShellError(f"{name}: unbound variable", fatal=True, exit_status=127)
    if op == ":":
        return [[(_substring(env, value or "", part), kind)]]
    return [[(_apply_op(env, part, value or ""), kind)]]


def _transform(env: ExpandEnv, part: Param, text: str) -> str:
    """`${x@Q}` and friends: quoted for reuse, escapes decoded, case, attributes, assignment form."""
    op = part.op
    if op == "@Q":
        return single_quote(text)
    if op == "@E":
        from .lexer import _ansi_escape

        out, i = [], 0
        while i < len(text):
            if text[i] == "\\" and i + 1 < len(text):
                ch, i = _ansi_escape(text, i + 1)
                out.append(ch)
            else:
                out.append(text[i])
                i += 1
        return "".join(out)
    if op == "@P":  # as a prompt: `\u`, `\w`, `\$` …
        from .prompt import render_ps1

        return render_ps1(text, env.prompt_view())
    if op == "@U":
        return text.upper()
    if op == "@u":
        return text[:1].upper() + text[1:]
    if op == "@L":
        return text.lower()
    if op == "@a":
        return env.attributes(part.name)
    if op == "@A":
        return f"{part.name}=" + single_quote(text)
    return text


def _c_locale(env: ExpandEnv) -> bool:
    """The shell's LC_ALL / LC_CTYPE / LANG make it the C locale, where bash counts and matches bytes."""
    locale = env.get_var("LC_ALL") or env.get_var("LC_CTYPE") or env.get_var("LANG") or ""
    return locale in ("C", "POSIX")


def _to_bytes(text: str) -> str:
    """Text as one character per UTF-8 byte (for C-locale matching); `_from_bytes` undoes it."""
    return text.encode("utf-8", "surrogateescape").decode("latin-1")


def _from_bytes(text: str) -> str:
    return text.encode("latin-1").decode("utf-8", "surrogateescape")


def _length(env: ExpandEnv, text: str) -> int:
    """`${#x}`: characters, or bytes in the C locale (LC_ALL / LC_CTYPE / LANG), as bash counts."""
    if _c_locale(env):
        return len(text.encode("utf-8", "surrogateescape"))
    return len(text)


def _apply_op(env: ExpandEnv, part: Param, text: str) -> str:
    """The string operators — case changes, pattern removal and replacement — on one value."""
    op = part.op
    assert op is not None and part.arg is not None
    if op.startswith("@"):
        return _transform(env, part, text)
    if op in ("^", "^^", ",", ",,"):
        conv = str.upper if op[0] == "^" else str.lower
        if part.arg.parts:
            pat = expand_pattern(env, part.arg)
            ext = env.shopt("extglob")
            if len(op) == 2:
                return "".join(conv(c) if patterns.match(pat, c, ext) else c for c in text)
            return (conv(text[:1]) if text and patterns.match(pat, text[0], ext) else text[:1]) + text[1:]
        return conv(text) if len(op) == 2 else conv(text[:1]) + text[1:]
    pat = expand_pattern(env, part.arg)
    if not text.isascii() and _c_locale(env):  # `?` is one byte there, as in bash
        if op in ("/", "//", "/#", "/%"):
            rep = _replacement(env, part.rep)
            return _from_bytes(patterns.replace(_to_bytes(text), _to_bytes(pat), lambda m: _to_bytes(rep(_from_bytes(m))),
                                                op, env.shopt("extglob")))  # fmt: skip
        return _from_bytes(patterns.strip(_to_bytes(text), _to_bytes(pat), op, env.shopt("extglob")))
    if op in ("/", "//", "/#", "/%"):
        rep = _replacement(env, part.rep)
        return patterns.replace(text, pat, rep, op, env.shopt("extglob"))
    return patterns.strip(text, pat, op, env.shopt("extglob"))


def _slice_list(env: ExpandEnv, part: Param, values: list[str]) -> list[str]:
    """`${@:off:len}`, `${a[@]:off:len}`: whole elements; for `$@` offset 0 is `$0`."""
    assert part.arg is not None
    _no_empty_offset(part)
    spec = expand_string(env, part.arg)
    vars_ = arith.Vars(env.get_var, env.set_var, env.nounset)
    off_text, colon, len_text = spec.partition(":")
    off = arith.evaluate(off_text, vars_) if off_text.strip() else 0
    if part.name in ("@", "*") and part.index is None and not part.indirect:
        values = [env.special_param("0") or "", *values]
    elif part.index is not None and not part.indirect and off >= 0:
        keys = env.array_keys(part.name)
        if all(is_digits(k) for k in keys):  # a sparse array: the offset is an index, not a position
            values = [v for k, v in zip(keys, values, strict=False) if int(k) >= off]
            off = 0
    n = len(values)
    start = off if off >= 0 else n + off
    if start < 0 or start > n:
        return []
    if not colon:
        return values[start:]
    length = arith.evaluate(len_text, vars_) if len_text.strip() else 0
    if length < 0:
        raise ShellError(f"{len_text.strip()}: substring expression < 0", fatal=True, abort=True)
    return values[start : start + length]


def _replacement(env: ExpandEnv, word: Word | None):  # noqa: ANN202 - a str -> str function
    """The replacement of `${x/p/r}`: an unquoted `&` stands for the match (bash 5.2's patsub_replacement)."""
    if word is None:
        return lambda _m: ""
    segs = [seg for f in _expand_fields(env, word.parts, join_at=True) for seg in f]
    return lambda m: "".join(t if k == "q" else t.replace("&", m) for t, k in segs)


def _no_empty_offset(part: Param) -> None:
    """`${x:}` is a bad substitution in bash (`${x: }` is offset 0)."""
    assert part.arg is not None
    if not part.arg.parts:
        raise ShellError(f"{part.arg.raw}: bad substitution", fatal=True, abort=True)


def _substring(env: ExpandEnv, text: str, part: Param) -> str:
    """`${x:offset}` / `${x:offset:length}`: arithmetic offsets, negative ones from the end."""
    assert part.arg is not None
    _no_empty_offset(part)
    spec = expand_string(env, part.arg)
    vars_ = arith.Vars(env.get_var, env.set_var, env.nounset)
    off_text, colon, len_text = spec.partition(":")
    n = len(text)
    off = arith.evaluate(off_text, vars_) if off_text.strip() else 0  # `${s: }` is `${s:0}`
    start = off if off >= 0 else n + off
    if start < 0 or start > n:
        return ""
    if not colon:
        return text[start:]
    length = arith.evaluate(len_text, vars_) if len_text.strip() else 0
    end = start + length if length >= 0 else n + length
    if end < start:
        raise ShellError(f"{len_text.strip()}: substring expression < 0", fatal=True, abort=True)
    return text[start:end]


def _arg(env: ExpandEnv, part: Param) -> list[list[Segment]]:
    """The word of `${x:-word}` as fields: its unquoted text is split like an expansion's result when `${…}` is
    unquoted, and a `"${a[@]}"` inside keeps its elements apart."""
    assert part.arg is not None
    parts = part.arg.parts
    if part.quoted:  # inside "${x:-…}" an inner ${a[@]} is as if quoted: its elements, unsplit
        parts = [dataclasses.replace(p, quoted=True) if isinstance(p, Param) and not p.quoted else p for p in parts]
    fields = _expand_fields(env, parts)
    out: list[list[Segment]] = []
    for f in fields:
        if part.quoted:
            out.append([(t, "q") for t, k in f if k != "@"] or ([("", "q")] if len(fields) == 1 else []))
        else:
            out.append([(t, "x" if k == "l" else k) for t, k in f])
    return [f for f in out if f] or [[("", "q")]] if part.quoted else out

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
