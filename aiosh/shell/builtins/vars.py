"""export, unset, set, shift, source / ., eval, read, local: variables, options and positional parameters."""

from __future__ import annotations

import os
import re
import time

from .. import reader
from ..errors import AbortCommand, ReturnFromFunction
from ..filepipe import FilePipe
from ..lexer import is_name as valid_name
from ..quoting import double_quote, value_quote
from . import BuiltinContext, BuiltinRegistry
from .getopt import Options

# `set -o` names: the ones aiosh implements map to ShellState fields; bash's others are accepted and ignored.
OPTION_FIELDS = {"errexit": "errexit", "noglob": "noglob", "pipefail": "pipefail", "xtrace": "xtrace",
                 "nounset": "nounset", "allexport": "allexport", "jobtags": "jobtags", "verbose": "verbose",
                 "noclobber": "noclobber"}  # fmt: skip
LETTERS = {"e": "errexit", "f": "noglob", "x": "xtrace", "u": "nounset", "a": "allexport", "v": "verbose",
           "C": "noclobber"}
IGNORED_OPTIONS = frozenset(
    ["braceexpand", "emacs", "errtrace", "functrace", "hashall", "histexpand", "history", "ignoreeof", "interactive-comments", "keyword", "monitor", "noexec", "nolog", "notify", "onecmd", "physical", "posix", "privileged", "vi"]
)
IGNORED_LETTERS = frozenset("bhkmnptBEHPT")
EXPORT = Options("fnp")
READ = Options("ersa:d:n:N:p:t:u:")
MAPFILE = Options("td:n:O:s:u:C:c:")


def export(ctx: BuiltinContext) -> int:
    st = ctx.state
    flags, args = EXPORT.switches(ctx.args)
    unexport = "n" in flags
    if not args:
        for name in sorted(st.exported):
            if name in st.vars:
                ctx.write(f"declare -x {name}={double_quote(st.vars[name])}\n")
            else:
                ctx.write(f"declare -x {name}\n")
        return 0
    status = 0
    for arg in args:
        name, eq, value = arg.partition("=")
        if not valid_name(name):
            status = ctx.error(f"`{arg}': not a valid identifier")
            continue
        if eq:
            st.vars[name] = value
        if unexport:
            st.exported.discard(name)
        else:
            st.exported.add(name)
    return status


SET = Options("o;" + "".join(LETTERS) + "".join(IGNORED_LETTERS), plus=True)


def set_(ctx: BuiltinContext) -> int:
    """bash's set: option letters and `-o NAME` (`+` turns off; `-o`/`+o` alone list them), then the operands
    become the positional parameters. A lone `-` ends the options and turns -x and -v off; `--` ends them and
    sets the parameters even to none; a lone `+` is ignored."""
    st = ctx.state
    args = list(ctx.args)
    if not args:
        for name in sorted(st.vars):
            ctx.write(f"{name}={value_quote(st.vars[name])}\n")
        return 0
    while True:
        scan = SET.scan(args)
        for flag in scan:
            if flag.letter == "o":
                if flag.value is None:
                    _show_options(ctx, flag.on)
                elif flag.value in OPTION_FIELDS:
                    setattr(st, OPTION_FIELDS[flag.value], flag.on)
                elif flag.value not in IGNORED_OPTIONS:
                    return ctx.usage_error(f"{flag.value}: invalid option name")
            elif flag.letter in LETTERS:
                setattr(st, LETTERS[flag.letter], flag.on)
        rest = scan.rest
        if rest[:1] == ["+"]:  # ignored; the options go on after it
            args = rest[1:]
            continue
        if rest[:1] == ["-"]:
            st.xtrace = st.verbose = False
            rest = rest[1:]
        elif scan.used and args[scan.used - 1] == "--":
            st.positional = rest
            return 0
        if rest:
            st.positional = rest
        return 0


def _show_options(ctx: BuiltinContext, minus: bool) -> None:
    st = ctx.state
    names = sorted(set(OPTION_FIELDS) | IGNORED_OPTIONS)
    for name in names:
        on = bool(getattr(st, OPTION_FIELDS[name], False)) if name in OPTION_FIELDS else False
        if minus:
            ctx.write(f"{name:<15}\t{'on' if on else 'off'}\n")
        else:
            ctx.write(f"set {'-' if on else '+'}o {name}\n")


def shift(ctx: BuiltinContext) -> int:
    st = ctx.state
    n = 1
    if ctx.args:
        try:
            n = int(ctx.args[0])
        except ValueError:
            return ctx.error(f"{ctx.args[0]}: numeric argument required")
        if n < 0:
            return ctx.error(f"{n}: shift count out of range")
    if n > len(st.positional):
        return 1
    st.positional = st.positional[n:]
    return 0


def source(ctx: BuiltinContext) -> int:
    args = list(ctx.args)
    if args and args[0] == "--":
        args.pop(0)
    if not args:
        ctx.error("filename argument required")
        return ctx.usage_error(None)
    name = args[0]
    path = _find_source(ctx, name)
    if path is None:
        ctx.interp.diag(ctx.io, f"{name}: No such file or directory")
        return 1
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except IsADirectoryError:
        ctx.interp.diag(ctx.io, f"{name}: is a directory")
        return 1
    except OSError as exc:
        ctx.interp.diag(ctx.io, f"{name}: {exc.strerror}")
        return 1
    except ValueError:
        ctx.interp.diag(ctx.io, f"{name}: No such file or directory")
        return 1
    st = ctx.state
    saved = st.positional
    if len(args) > 1:
        st.positional = args[1:]
    ctx.interp.source_depth += 1
    try:
        return ctx.interp.run_text(text, source_name=name, io=ctx.io)
    except ReturnFromFunction as exc:
        return exc.status
    finally:
        ctx.interp.source_depth -= 1
        if len(args) > 1:
            st.positional = saved


def _find_source(ctx: BuiltinContext, name: str) -> str | None:
    cwd = ctx.state.cwd
    if "/" in name:
        path = os.path.join(cwd, name)
        return path if os.path.exists(path) else None
    for d in ctx.state.vars.get("PATH", "").split(":"):
        cand = os.path.join(cwd, d or ".", name)
        if os.path.isfile(cand) and os.access(cand, os.R_OK):
            return cand
    path = os.path.join(cwd, name)
    return path if os.path.exists(path) else None


def eval_(ctx: BuiltinContext) -> int:
    args = list(ctx.args)
    if args and args[0] == "--":
        args.pop(0)
    elif args and len(args[0]) > 1 and args[0][0] == "-" and args[0][1:].isalpha():
        return ctx.usage_error(f"{args[0]}: invalid option")
    text = " ".join(args)
    if not text.strip():
        return 0
    try:
        return ctx.interp.run_text(text, source_name=ctx.interp.source_name, io=ctx.io, nested=True)
    except AbortCommand as exc:  # an expansion or assignment error ends what eval runs, not its caller
        return exc.status


def read_(ctx: BuiltinContext) -> int:
    """bash's read: -r -s -e -p PROMPT -d DELIM -n N -N N -a ARRAY -t SECONDS -u FD, smooshed forms too."""
    args = list(ctx.args)
    raw = False
    prompt = ""
    delim: str | None = "\n"
    count: int | None = None
    exact = False
    array: str | None = None
    timeout: float | None = None
    fd = 0
    scan = READ.scan(ctx.args)
    for c, value, _on in scan:
        if value is None:
            raw = raw or c == "r"
        elif c == "p":
            prompt = value
        elif c == "d":
            delim = value[:1] or "\0"
        elif c in "nN":
            if not (value.isascii() and value.isdigit()):
                return ctx.error(f"{value}: invalid number", 1)
            count, exact = int(value), c == "N"
        elif c == "a":
            array = value
        elif c == "t":
            try:
                timeout = float(value)
            except ValueError:
                timeout = -1.0
            if timeout < 0:
                return ctx.error(f"{value}: invalid timeout specification", 1)
        else:
            if not (value.isascii() and value.isdigit()):
                return ctx.error(f"{value}: invalid file descriptor specification", 1)
            fd = int(value)
    args = scan.rest
    for name in args:
        if not valid_name(name) and not _subscripted(name):
            return ctx.error(f"`{name}': not a valid identifier")
    src = ctx.io.fds.get(fd)
    if fd not in ctx.io.fds and fd != 0:
        return ctx.error(f"{fd}: invalid file descriptor: Bad file descriptor", 1)
    if prompt and ctx.session.interactive:
        ctx.write_err(prompt)
    if timeout == 0:
        if src is None:
            return 1
        if isinstance(src, FilePipe):
            return 0 if src.ready() else 1
        for _ in range(5):  # a pipe's writer may be a thread that has not run yet
            if src.has_data or src.closed or reader.has_pushback(src):
                return 0
            time.sleep(0.01)
        return 1
    if src is None:
        line, how = "", "eof"
    elif count is not None and not raw and not exact:
        line, how = _read_counted(ctx, src, count, delim, None if timeout is None else time.monotonic() + timeout)
        raw = True  # escapes are already resolved
    else:
        deadline = None if timeout is None else time.monotonic() + timeout
        line, how = reader.read_upto(src, count, None if exact else delim, ctx.checkpoint, deadline)
        if not raw and how == "delim":
            while _odd_backslashes(line) and how == "delim":
                more, how = reader.read_upto(src, None if count is None else count - len(line), delim,
                                             ctx.checkpoint, deadline)  # fmt: skip
                # backslash-newline joins lines; an escaped delimiter is kept as an escaped character
                line = (line[:-1] if delim == "\n" else line + (delim or "")) + (more or "")
    if exact:
        _assign_plain(ctx, args or ["REPLY"], line)
    elif array is not None:
        _assign_array(ctx, array, _chars(line, raw))
    else:
        _assign_fields(ctx, args, _chars(line, raw))
    if how == "timeout":
        return 142
    return 0 if how in ("delim", "count") else 1


def _read_counted(ctx: BuiltinContext, src, count: int, delim: str | None, deadline: float | None) -> tuple[str, str]:  # noqa: ANN001
    """`read -n N` without -r: N characters after backslash escapes (`\\x` counts one, backslash-newline none)."""
    out: list[str] = []
    while len(out) < count:
        ch, how = reader.read_upto(src, 1, None, ctx.checkpoint, deadline)
        if how in ("eof", "timeout") and not ch:
            return "".join(out), how
        if ch == delim:
            return "".join(out), "delim"
        if ch == "\\":
            nxt, how = reader.read_upto(src, 1, None, ctx.checkpoint, deadline)
            if not nxt:
                return "".join(out), how
            if nxt == "\n":
                continue
            out.append(nxt)
            continue
        out.append(ch)
    return "".join(out), "count"


def _subscripted(name: str) -> bool:
    return re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*\[.*\]", name) is not None


def _assign_plain(ctx: BuiltinContext, names: list[str], text: str) -> None:
    ctx.interp.variables.assign(names[0], text)
    for name in names[1:]:
        ctx.interp.variables.assign(name, "")


def _assign_array(ctx: BuiltinContext, name: str, chars: list[tuple[str, bool]]) -> None:
    """`read -a`: every IFS field an element."""
    ifs = ctx.interp.get_var("IFS")
    ifs = " \t\n" if ifs is None else ifs
    fields: list[str] = []
    cur: list[str] = []
    ws = {c for c in ifs if c in " \t\n"}
    i = 0
    n = len(chars)
    while i < n and not chars[i][1] and chars[i][0] in ws:
        i += 1
    pending = False
    while i < n:
        c, esc = chars[i]
        if not esc and c in ifs:
            fields.append("".join(cur))
            cur = []
            pending = False
            j = i
            while j + 1 < n and not chars[j + 1][1] and chars[j + 1][0] in ws:
                j += 1
            if c in ws and j + 1 < n and not chars[j + 1][1] and chars[j + 1][0] in ifs and chars[j + 1][0] not in ws:
                j += 1
                while j + 1 < n and not chars[j + 1][1] and chars[j + 1][0] in ws:
                    j += 1
            i = j + 1
            pending = i < n
            continue
        cur.append(c)
        pending = True
        i += 1
    if cur or pending:
        fields.append("".join(cur))
    ctx.interp.variables.assign_array(name, [(None, f) for f in fields])


def _odd_backslashes(text: str) -> bool:
    n = len(text) - len(text.rstrip("\\"))
    return n % 2 == 1


def _chars(line: str, raw: bool) -> list[tuple[str, bool]]:
    """The line as (char, escaped) pairs: without -r a backslash quotes the next char (even an IFS one)."""
    if raw:
        return [(c, False) for c in line]
    out: list[tuple[str, bool]] = []
    i = 0
    while i < len(line):
        if line[i] == "\\":
            if i + 1 < len(line) and line[i + 1] != "\n":  # backslash-newline is a line continuation
                out.append((line[i + 1], True))
            i += 2
        else:
            out.append((line[i], False))
            i += 1
    return out


def _assign_fields(ctx: BuiltinContext, names: list[str], chars: list[tuple[str, bool]]) -> None:
    """Split on unescaped IFS characters into the names, the last one taking the rest (bash's `read`)."""
    interp = ctx.interp
    if not names:
        interp.variables.assign("REPLY", "".join(c for c, _ in chars))
        return
    ifs = interp.get_var("IFS")
    ifs = " \t\n" if ifs is None else ifs
    ws = {c for c in ifs if c in " \t\n"}
    other = {c for c in ifs if c not in " \t\n"}

    def is_ws(i: int) -> bool:
        return not chars[i][1] and chars[i][0] in ws

    lo, hi = 0, len(chars)
    while lo < hi and is_ws(lo):
        lo += 1
    while hi > lo and is_ws(hi - 1):
        hi -= 1
    pos = lo
    for name in names[:-1]:
        cut = pos
        while cut < hi and (chars[cut][1] or chars[cut][0] not in ifs):
            cut += 1
        interp.variables.assign(name, "".join(c for c, _ in chars[pos:cut]))
        pos = cut
        while pos < hi and is_ws(pos):
            pos += 1
        if pos < hi and not chars[pos][1] and chars[pos][0] in other:
            pos += 1
            while pos < hi and is_ws(pos):
                pos += 1
    def is_other(i: int) -> bool:
        return not chars[i][1] and chars[i][0] in other

    # the rest is one field and its delimiter (`a:` with IFS=:): bash drops that delimiter
    if hi > pos and is_other(hi - 1) and not any(is_other(i) for i in range(pos, hi - 1)):
        hi -= 1
        while hi > pos and is_ws(hi - 1):
            hi -= 1
    interp.variables.assign(names[-1], "".join(c for c, _ in chars[pos:hi]))


def mapfile(ctx: BuiltinContext) -> int:
    """`mapfile [-t] [-d DELIM] [-n COUNT] [-O ORIGIN] [-s SKIP] [-u FD] [ARRAY]` (also `readarray`): lines
    of input into an indexed array, reading no further than the lines it takes."""
    args = list(ctx.args)
    strip, delim, count, origin, skip, fd = False, "\n", 0, None, 0, 0
    numbers = {"n": "count", "O": "origin", "s": "skip", "u": "fd"}
    scan = MAPFILE.scan(ctx.args)
    for c, value, _on in scan:
        if value is None:
            strip = True
        elif c == "d":
            delim = value[:1] or "\0"
        elif c in numbers:
            if not (value.isascii() and value.isdigit()):
                return ctx.error(f"{value}: invalid {'line count' if c == 'n' else 'number'}")
            n = int(value)
            if c == "n":
                count = n
            elif c == "O":
                origin = n
            elif c == "s":
                skip = n
            else:
                fd = n
    args = scan.rest
    name = args[0] if args else "MAPFILE"
    if not valid_name(name):
        return ctx.error(f"`{name}': not a valid identifier")
    src = ctx.io.fds.get(fd)
    if fd not in ctx.io.fds and fd != 0:
        return ctx.error(f"{fd}: invalid file descriptor: Bad file descriptor")
    lines: list[str] = []
    while src is not None and (not count or len(lines) < count):
        text, how = reader.read_upto(src, None, delim, ctx.checkpoint)
        if how == "eof" and not text:
            break
        if skip:
            skip -= 1
            continue
        lines.append(text if strip or how != "delim" else text + delim)
        if how == "eof":
            break
    interp = ctx.interp
    if origin is None:
        interp.variables.assign_array(name, [(None, v) for v in lines])
    else:
        interp.variables.assign_array(name, [(str(origin + k), v) for k, v in enumerate(lines)], append=True)
    return 0


def register(reg: BuiltinRegistry) -> None:
    reg.register("export", export, "mark variables for the environment of agents and programs",
                 "export [-fn] [name[=value] ...] or export -p")  # fmt: skip
    reg.register("set", set_, "set options (-e, -u, -x, -f, -o pipefail) or positional parameters",
                 "set [-efux] [-o option-name] [--] [-] [arg ...]")  # fmt: skip
    reg.register("shift", shift, "drop the first N positional parameters", "shift [n]")
    reg.register("source", source, "run a file's commands in the current shell", "source filename [arguments]")
    reg.register(".", source, "run a file's commands in the current shell", ". filename [arguments]")
    reg.register("eval", eval_, "run the arguments, joined, as shell commands", "eval [arg ...]")
    reg.register("mapfile", mapfile, "read lines of input into an indexed array",
                 "mapfile [-t] [-d delim] [-n count] [-O origin] [-s count] [-u fd] [array]")  # fmt: skip
    reg.register("readarray", mapfile, "read lines of input into an indexed array (same as mapfile)",
                 "readarray [-t] [-d delim] [-n count] [-O origin] [-s count] [-u fd] [array]")  # fmt: skip
    reg.register("read", read_, "read a line of standard input into variables (split on IFS)",
                 "read [-rs] [-d delim] [-p prompt] [name ...]")  # fmt: skip
