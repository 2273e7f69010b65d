"""printf as bash has it built in: C conversions, `%b`, `%q`, `%(fmt)T`, `-v var`, the format reused until the
arguments run out; a bad number is reported and counts as its valid prefix (status 1)."""

from __future__ import annotations

import os
import re
import threading
import time

from ..lexer import byte_char
from ..quoting import dollar_quote, has_controls
from . import BuiltinContext, BuiltinRegistry
from .escapes import B_ARG, FORMAT, unescape

_SPEC = re.compile(r"%([-+ #0']*)(\*|\d+)?(?:\.(\*|\d*))?(\((?:[^)]*)\)T|[diouxXeEfFgGcsbqaA%])")
class _Stop(Exception):
    """`\\c` in a `%b` argument: no more output at all."""


def escapes(text: str, *, in_b: bool) -> str:
    """Backslash escapes of the format (and of `%b` arguments, where octal is `\\0NNN` and `\\c` stops)."""
    out, more = unescape(text, B_ARG if in_b else FORMAT)
    if not more:
        raise _Stop(out)
    return out


_SAFE_Q = re.compile(r"[A-Za-z0-9_./:,+@%=^-]")


def shell_quote(text: str) -> str:
    """`%q`: bash's quoting — backslashes, or `$'…'` when there are control characters."""
    if text == "":
        return "''"
    if has_controls(text):
        return dollar_quote(text)
    out = []
    for k, c in enumerate(text):
        if _SAFE_Q.fullmatch(c) or ord(c) > 127:
            out.append("\\~" if c == "~" and k == 0 else c)
        else:
            out.append("\\" + c)
    return "".join(out)


class Printf:
    def __init__(self, ctx: BuiltinContext) -> None:
        self.ctx = ctx
        self.status = 0

    def number(self, arg: str, *, unsigned: bool = False) -> int:
        s = arg.lstrip()  # leading blanks are fine, trailing ones make an invalid number (strtol)
        if not s:
            return 0
        if s[0] in "'\"":
            return ord(s[1]) if len(s) > 1 else 0
        m = re.match(r"[-+]?(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)", s)
        if not m:
            self.ctx.error(f"{arg}: invalid number")
            self.status = 1
            return 0
        text = m.group(0)
        sign = -1 if text.startswith("-") else 1
        body = text.lstrip("+-")
        value = int(body, 16) if body[:2].lower() == "0x" else int(body, 8) if len(body) > 1 and body[0] == "0" else int(body)
        if m.end() != len(s):
            self.ctx.error(f"{arg}: invalid number")
            self.status = 1
        value *= sign
        if unsigned:  # strtoumax: a magnitude past 2**64-1 clamps there (either sign); a negative one wraps
            if abs(value) >= 1 << 64:
                return (1 << 64) - 1
            return value & ((1 << 64) - 1)
        return max(-(1 << 63), min((1 << 63) - 1, value))  # strtoimax clamps

    def real(self, arg: str) -> float:
        s = arg.strip()
        if not s:
            return 0.0
        if s[0] in "'\"":
            return float(ord(s[1])) if len(s) > 1 else 0.0
        try:
            return float(s)
        except ValueError:
            m = re.match(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", s)
            self.ctx.error(f"{arg}: invalid number")
            self.status = 1
            return float(m.group(0)) if m else 0.0

    def render(self, fmt: str, args: list[str]) -> str:
        out: list[str] = []
        pos = 0
        first = True
        while first or pos < len(args):
            first = False
            used_before = pos
            text, pos, stop = self._once(fmt, args, pos)
            out.append(text)
            if stop or pos == used_before:
                break
        return "".join(out)

    def _once(self, fmt: str, args: list[str], pos: int) -> tuple[str, int, bool]:
        out: list[str] = []
        i = 0

        def take() -> str | None:
            nonlocal pos
            if pos < len(args):
                pos += 1
                return args[pos - 1]
            return None

        while i < len(fmt):
            c = fmt[i]
            if c == "\\":
                j = i + 1
                if j < len(fmt) and fmt[j] in "01234567":
                    k = j
                    while k < len(fmt) and k < j + 3 and fmt[k] in "01234567":
                        k += 1
                    out.append(byte_char(int(fmt[j:k], 8) & 0xFF))
                    i = k
                    continue
                if j < len(fmt) and fmt[j] in "xuU":
                    digits = {"x": 2, "u": 4, "U": 8}[fmt[j]]
                    k = j + 1
                    while k < len(fmt) and k < j + 1 + digits and fmt[k] in "0123456789abcdefABCDEF":
                        k += 1
                    out.append(escapes(fmt[i:k], in_b=False))
                    i = k
                    continue
                out.append(escapes(fmt[i : j + 1], in_b=False))
                i = j + 1
                continue
            if c != "%":
                out.append(c)
                i += 1
                continue
            m = _SPEC.match(fmt, i)
            if not m:
                bad = fmt[i + 1 : i + 2]
                self.ctx.error(f"%{bad}: invalid format character" if bad else "`%': missing format character")
                self.status = 1
                return "".join(out), pos, True
            i = m.end()
            flags, width, prec, conv = m.group(1), m.group(2), m.group(3), m.group(4)
            if conv == "%":
                out.append("%")
                continue
            if width == "*":
                w = take()
                width = str(self.number(w or "0"))
            if prec == "*":
                p = take()
                prec = str(max(0, self.number(p or "0")))
            flags = flags.replace("'", "")
            if width and width.startswith("-"):
                flags += "-"
                width = width[1:]
            spec = "%" + flags + (width or "") + ("." + prec if prec is not None else "")
            arg = take()
            try:
                out.append(self._convert(conv, spec, arg, prec))
            except _Stop as stop:
                out.append(str(stop))
                return "".join(out), pos, True
        return "".join(out), pos, False

    def _convert(self, conv: str, spec: str, arg: str | None, prec: str | None) -> str:
        if conv.endswith("T"):
            tfmt = conv[1:-2]
            value = -1 if arg is None or not arg.strip() else self.number(arg)
            when = time.time() if value == -1 else self.ctx.session.started_wall if value == -2 else value
            tz = self.ctx.interp.get_var("TZ") if "TZ" in self.ctx.state.exported else os.environ.get("TZ")
            text = _strftime(tfmt or "%X", when, tz)  # bash: an unexported TZ does not count
            return (spec + "s") % text
        if conv in "di":
            return (spec + "d") % self.number(arg or "")
        if conv in "ouxX":
            value = self.number(arg or "", unsigned=True)
            if conv == "o" and "#" in spec:  # C's alternate octal form is a leading 0, Python's is 0o
                spec = spec.replace("#", "")
                text = (spec + "o") % value
                return text if value == 0 else text.replace(f"{value:o}", f"0{value:o}", 1)
            if value == 0:  # C prints a zero without the 0x of `#`
                spec = spec.replace("#", "")
            return (spec + ("d" if conv == "u" else conv)) % value
        if conv in "eEfFgGaA":
            c = conv if conv not in "aA" else ("e" if conv == "a" else "E")
            return (spec + c) % self.real(arg or "")
        if conv == "c":  # bash prints the first byte, even of a multi-byte character
            first = (arg or "")[:1].encode("utf-8", "surrogateescape")[:1].decode("utf-8", "surrogateescape")
            return (spec.split(".")[0] + "s") % first
        if conv == "b":
            try:
                text = escapes(arg or "", in_b=True)
            except _Stop as stop:
                raise _Stop((spec + "s") % str(stop)) from None
            return (spec + "s") % text
        if conv == "q":
            return (spec + "s") % shell_quote(arg or "")
        return (spec + "s") % (arg or "")


_tz_lock = threading.Lock()


def _strftime(fmt: str, when: float, tz: str | None) -> str:
    """strftime in the shell's exported TZ (a variable of this shell, not of the aiosh process)."""
    with _tz_lock:
        saved = os.environ.get("TZ")
        try:
            if tz is not None:
                os.environ["TZ"] = tz
            elif "TZ" in os.environ:
                del os.environ["TZ"]
            time.tzset()
            return time.strftime(fmt, time.localtime(when))
        finally:
            if saved is None:
                os.environ.pop("TZ", None)
            else:
                os.environ["TZ"] = saved
            time.tzset()


def printf(ctx: BuiltinContext) -> int:
    args = list(ctx.args)
    var = None
    if args and args[0] == "-v":
        if len(args) < 2:
            return ctx.usage_error("-v: option requires an argument")
        var = args[1]
        args = args[2:]
    if args and args[0] == "--":
        args = args[1:]
    if not args:
        return ctx.usage_error()
    if var is None and len(args[0]) == 2 and args[0][0] == "-" and args[0][1].isalpha():
        return ctx.usage_error(f"{args[0]}: invalid option")
    p = Printf(ctx)
    text = p.render(args[0], args[1:])
    if var is not None:
        from ..errors import ShellError

        try:
            ctx.interp.variables.assign(var, text)
        except ShellError as exc:
            return ctx.error(exc.message, 2)
        return p.status
    ctx.write(text)
    return p.status


def register(reg: BuiltinRegistry) -> None:
    reg.register("printf", printf, "format and print arguments (C conversions, %b, %q, %(fmt)T)",
                 "printf [-v var] format [arguments]")  # fmt: skip
