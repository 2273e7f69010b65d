"""true, false, :, test / [, exit, break, continue, return: the builtins that steer control flow."""

from __future__ import annotations

import os
import stat

from ..errors import BreakLoop, ContinueLoop, ExitShell, ReturnFromFunction, ShellError
from . import BuiltinContext, BuiltinRegistry


def true(_ctx: BuiltinContext) -> int:
    return 0


def false(_ctx: BuiltinContext) -> int:
    return 1


# -- test ------------------------------------------------------------------------------------------------------

UNARY = frozenset(["-e", "-f", "-d", "-r", "-w", "-x", "-s", "-L", "-h", "-p", "-S", "-b", "-c", "-t", "-z", "-n", "-v", "-o", "-g", "-u", "-k", "-O", "-G", "-N"])
BINARY = frozenset(["=", "==", "!=", "<", ">", "-eq", "-ne", "-lt", "-le", "-gt", "-ge", "-nt", "-ot", "-ef"])


class _TestError(Exception):
    pass


class _Test:
    """POSIX `test` (with bash's extensions): the special cases by argument count, then a small parser."""

    def __init__(self, ctx: BuiltinContext, args: list[str]) -> None:
        self.ctx = ctx
        self.args = args
        self.i = 0

    def run(self) -> bool:
        a = self.args
        n = len(a)
        if n == 0:
            return False
        if n == 1:
            return a[0] != ""
        if n == 2:
            if a[0] == "!":
                return a[1] == ""
            if a[0] == "-a":  # bash: the old unary -a, the same as -e
                return self.unary("-e", a[1])
            if a[0] in UNARY:
                return self.unary(a[0], a[1])
            raise _TestError(f"{a[0]}: unary operator expected")
        if n == 3:
            if a[1] in BINARY:
                return self.binary(a[0], a[1], a[2])
            if a[0] == "!":
                return not _Test(self.ctx, a[1:]).run()
            if a[0] == "(" and a[2] == ")":
                return a[1] != ""
            if a[1] in ("-a", "-o"):
                return (a[0] != "" and a[2] != "") if a[1] == "-a" else (a[0] != "" or a[2] != "")
            raise _TestError(f"{a[1]}: binary operator expected")
        if n == 4:
            if a[0] == "!":
                return not _Test(self.ctx, a[1:]).run()
            if a[0] == "(" and a[3] == ")":
                return _Test(self.ctx, a[1:3]).run()
        value = self.expr()
        if self.i < n:
            raise _TestError("too many arguments")
        return value

    # general grammar: expr := and ('-o' and)* ; and := not ('-a' not)* ; not := '!' not | primary
    def peek(self) -> str | None:
        return self.args[self.i] if self.i < len(self.args) else None

    def take(self) -> str:
        if self.i >= len(self.args):
            raise _TestError("argument expected")
        self.i += 1
        return self.args[self.i - 1]

    def expr(self) -> bool:
        value = self.conj()
        while self.peek() == "-o":
            self.take()
            right = self.conj()
            value = value or right
        return value

    def conj(self) -> bool:
        value = self.neg()
        while self.peek() == "-a":
            self.take()
            right = self.neg()
            value = value and right
        return value

    def neg(self) -> bool:
        if self.peek() == "!":
            self.take()
            return not self.neg()
        return self.primary()

    def primary(self) -> bool:
        tok = self.take()
        if tok == "(":
            value = self.expr()
            if self.peek() != ")":
                raise _TestError("`)' expected")
            self.take()
            return value
        nxt = self.peek()
        if nxt is not None and nxt in BINARY and self.i + 1 < len(self.args):
            self.take()
            return self.binary(tok, nxt, self.take())
        if tok in UNARY and nxt is not None:
            return self.unary(tok, self.take())
        return tok != ""

    def integer(self, text: str) -> int:
        s = text.strip()
        body = s[1:] if s[:1] in "+-" else s
        if not body.isdigit() or not body.isascii():
            raise _TestError(f"{text}: integer expression expected")
        return int(s)

    def path(self, name: str) -> str:
        return os.path.join(self.ctx.state.cwd, name)

    def unary(self, op: str, arg: str) -> bool:
        if op == "-z":
            return arg == ""
        if op == "-n":
            return arg != ""
        if op == "-v":
            return self.ctx.interp.variables.is_set(arg)
        if op == "-o":
            st = self.ctx.state
            on = {"errexit": st.errexit, "pipefail": st.pipefail, "nounset": st.nounset, "xtrace": st.xtrace,
                  "noglob": st.noglob, "allexport": st.allexport}  # fmt: skip
            return on.get(arg, False)
        if op == "-t":
            return False
        return file_test(self.ctx.state.cwd, op, arg)

    def binary(self, a: str, op: str, b: str) -> bool:
        if op in ("=", "=="):
            return a == b
        if op == "!=":
            return a != b
        if op == "<":
            return a < b
        if op == ">":
            return a > b
        if op in ("-nt", "-ot", "-ef"):
            return file_test(self.ctx.state.cwd, op, a, b)
        x, y = self.integer(a), self.integer(b)
        return {"-eq": x == y, "-ne": x != y, "-lt": x < y, "-le": x <= y, "-gt": x > y, "-ge": x >= y}[op]


def _stat(path: str, follow: bool = True) -> os.stat_result | None:
    try:
        return os.stat(path) if follow else os.lstat(path)
    except (OSError, ValueError):
        return None


def file_test(cwd: str, op: str, arg: str, other: str | None = None) -> bool:
    """The file operators of test and [[ ]]: unary ones on `arg`, -nt/-ot/-ef between `arg` and `other`."""
    if other is not None:
        sa = _stat(os.path.join(cwd, arg)) if arg else None
        sb = _stat(os.path.join(cwd, other)) if other else None
        if op == "-ef":
            return sa is not None and sb is not None and (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)
        if op == "-nt":  # bash: also true when only the left file exists
            return sa is not None and (sb is None or sa.st_mtime_ns > sb.st_mtime_ns)
        return sb is not None and (sa is None or sa.st_mtime_ns < sb.st_mtime_ns)
    if not arg:
        return False
    p = os.path.join(cwd, arg)
    st = _stat(p, follow=op not in ("-L", "-h"))
    if st is None:
        return False
    mode = st.st_mode
    checks = {
        "-e": lambda: True,
        "-f": lambda: stat.S_ISREG(mode),
        "-d": lambda: stat.S_ISDIR(mode),
        "-L": lambda: stat.S_ISLNK(mode),
        "-h": lambda: stat.S_ISLNK(mode),
        "-p": lambda: stat.S_ISFIFO(mode),
        "-S": lambda: stat.S_ISSOCK(mode),
        "-b": lambda: stat.S_ISBLK(mode),
        "-c": lambda: stat.S_ISCHR(mode),
        "-s": lambda: st.st_size > 0,
        "-r": lambda: os.access(p, os.R_OK),
        "-w": lambda: os.access(p, os.W_OK),
        "-x": lambda: os.access(p, os.X_OK),
        "-g": lambda: bool(mode & stat.S_ISGID),
        "-u": lambda: bool(mode & stat.S_ISUID),
        "-k": lambda: bool(mode & stat.S_ISVTX),
        "-O": lambda: st.st_uid == os.geteuid(),
        "-G": lambda: st.st_gid == os.getegid(),
        "-N": lambda: st.st_mtime > st.st_atime,
    }
    check = checks.get(op)
    return bool(check and check())


def test(ctx: BuiltinContext) -> int:
    args = ctx.args
    if ctx.name == "[":
        if not args or args[-1] != "]":
            return ctx.error("missing `]'", 2)
        args = args[:-1]
    try:
        return 0 if _Test(ctx, args).run() else 1
    except _TestError as exc:
        return ctx.error(str(exc), 2)


# -- exit, break, continue -------------------------------------------------------------------------------------


def exit_(ctx: BuiltinContext) -> int:
    shell = ctx.session
    interp = ctx.interp
    if len(ctx.args) > 1:
        ctx.error("too many arguments")
        if not shell.interactive:
            raise ExitShell(1)
        return 1
    if shell.interactive and interp.main:
        warning = shell.exit_warning()
        if warning:
            ctx.write_err(warning + "\n")
            return 1
    if not ctx.args:
        raise ExitShell(ctx.state.last_status)
    arg = ctx.args[0]
    try:
        status = int(arg.strip())
    except ValueError:
        ctx.error(f"{arg}: numeric argument required")
        raise ExitShell(2) from None
    raise ExitShell(status & 0xFF)


def _loop_count(ctx: BuiltinContext) -> int:
    if len(ctx.args) > 1:  # bash ends the shell here (status 1)
        ctx.error("too many arguments")
        raise ExitShell(1)
    if not ctx.args:
        return 1
    arg = ctx.args[0]
    try:
        n = int(arg)
    except ValueError:
        ctx.error(f"{arg}: numeric argument required")
        raise ExitShell(128) from None
    if n < 1:
        raise ShellError(f"{ctx.name}: {n}: loop count out of range")
    return n


def break_(ctx: BuiltinContext) -> int:
    if ctx.interp.loop_depth == 0:
        ctx.error("only meaningful in a `for', `while', or `until' loop")
        return 0
    n = _loop_count(ctx)
    raise BreakLoop(min(n, ctx.interp.loop_depth))


def continue_(ctx: BuiltinContext) -> int:
    if ctx.interp.loop_depth == 0:
        ctx.error("only meaningful in a `for', `while', or `until' loop")
        return 0
    n = _loop_count(ctx)
    raise ContinueLoop(min(n, ctx.interp.loop_depth))


def return_(ctx: BuiltinContext) -> int:
    interp = ctx.interp
    if not interp.func_depth and not interp.source_depth:
        return ctx.error("can only `return' from a function or sourced script", 2)
    if len(ctx.args) > 1:
        return ctx.error("too many arguments")
    if not ctx.args:
        raise ReturnFromFunction(ctx.state.last_status)
    try:
        status = int(ctx.args[0])
    except ValueError:
        ctx.error(f"{ctx.args[0]}: numeric argument required")
        raise ReturnFromFunction(2) from None
    raise ReturnFromFunction(status & 0xFF)


def register(reg: BuiltinRegistry) -> None:
    reg.register("true", true, "do nothing, successfully (status 0)", "true")
    reg.register("false", false, "do nothing, unsuccessfully (status 1)", "false")
    reg.register(":", true, "do nothing (status 0); arguments are expanded", ": [arguments]")
    reg.register("test", test, "evaluate a conditional expression (strings, integers, files)", "test [expr]")
    reg.register("[", test, "evaluate a conditional expression; the last argument must be `]'", "[ arg... ]")
    reg.register("exit", exit_, "exit the shell with status N (default: the last status)", "exit [n]")
    reg.register("break", break_, "exit from N enclosing for/while/until loops", "break [n]")
    reg.register("continue", continue_, "resume the next iteration of the Nth enclosing loop", "continue [n]")
    reg.register("return", return_, "return from a shell function or sourced file with status N", "return [n]")
