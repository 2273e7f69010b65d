"""echo, cat, cd, pwd: text in and out, and the shell's own working folder (never the process's)."""

from __future__ import annotations

import codecs
import os

from . import BuiltinContext, BuiltinRegistry
from .escapes import ECHO, unescape
from .getopt import Options

CD = Options("LPe")  # bash's -@ (extended attributes) is not built on Linux either: an invalid option
PWD = Options("LP")


def echo(ctx: BuiltinContext) -> int:
    args = ctx.args
    newline, escapes = True, False
    while args and len(args[0]) > 1 and args[0][0] == "-" and all(c in "neE" for c in args[0][1:]):
        for c in args[0][1:]:
            if c == "n":
                newline = False
            elif c == "e":
                escapes = True
            else:
                escapes = False
        args = args[1:]
    text = " ".join(args)
    if escapes:
        text, go_on = unescape(text, ECHO)
        if not go_on:
            newline = False
    ctx.write(text + ("\n" if newline else ""))
    return 0


def cat(ctx: BuiltinContext) -> int:
    files: list[str] = []
    number = False
    options_done = False
    for a in ctx.args:
        if not options_done and a == "--":
            options_done = True
        elif not options_done and a.startswith("-") and len(a) > 1:
            for c in a[1:]:
                if c == "n":
                    number = True
                elif c != "u":
                    ctx.error(f"invalid option -- '{c}'")
                    return 1
        else:
            files.append(a)
    status = 0
    line_no = [0]
    at_line_start = [True]

    def emit(text: str) -> None:
        if not number:
            ctx.write(text)
            return
        out = []
        for piece in text.splitlines(keepends=True):
            if at_line_start[0]:
                line_no[0] += 1
                out.append(f"{line_no[0]:6d}\t")
            out.append(piece)
            at_line_start[0] = piece.endswith("\n")
        ctx.write("".join(out))

    for name in files or ["-"]:
        if name == "-":
            for chunk in ctx.read_chunks():
                emit(chunk)
            continue
        path = os.path.join(ctx.state.cwd, name)
        try:
            with open(path, "rb") as f:
                dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
                while data := f.read(65536):
                    ctx.checkpoint()
                    emit(dec.decode(data))
                emit(dec.decode(b"", final=True))
        except FileNotFoundError:
            status = ctx.error(f"{name}: No such file or directory")
        except IsADirectoryError:
            status = ctx.error(f"{name}: Is a directory")
        except PermissionError:
            status = ctx.error(f"{name}: Permission denied")
        except OSError as exc:
            status = ctx.error(f"{name}: {exc.strerror}")
        except ValueError:
            status = ctx.error(f"{name}: No such file or directory")
    return status


def cd(ctx: BuiltinContext) -> int:
    scan = CD.scan(ctx.args)
    physical = False
    for flag in scan:
        if flag.letter in "LP":
            physical = flag.letter == "P"  # the last of -L and -P counts; -e only matters with -P (cwd gone)
    args = scan.rest
    if len(args) > 1:
        return ctx.error("too many arguments")
    st = ctx.state
    show = False
    if not args:
        target = st.vars.get("HOME")
        if target is None:
            return ctx.error("HOME not set")
        if target == "":
            return 0
    elif args[0] == "-":
        target = st.vars.get("OLDPWD")
        if not target:
            return ctx.error("OLDPWD not set")
        show = True
    else:
        target = args[0]
        found = _cdpath(st, target)
        if found:
            target = found
        show = bool(found)
    joined = os.path.join(st.cwd, os.path.expanduser(target) if target.startswith("~") else target)
    new = os.path.realpath(joined) if physical else os.path.normpath(joined)
    if new.startswith("//"):
        new = "/" + new.lstrip("/")
    if "\0" in new or not os.path.exists(new) or not os.path.exists(joined):  # `cd missing/..` fails, as in bash
        return ctx.error(f"{target}: No such file or directory")
    if not os.path.isdir(new):
        return ctx.error(f"{target}: Not a directory")
    if not os.access(new, os.X_OK):
        return ctx.error(f"{target}: Permission denied")
    st.vars["OLDPWD"] = st.cwd
    st.exported.add("OLDPWD")
    st.cwd = new
    st.vars["PWD"] = new
    if show:
        ctx.write(new + "\n")
    return 0


def _cdpath(st, target: str) -> str:  # noqa: ANN001
    """A relative name found under a CDPATH entry (bash then prints the new directory); '' otherwise."""
    cdpath = st.vars.get("CDPATH")
    if not cdpath or target.startswith(("/", "./", "../")) or target in (".", ".."):
        return ""
    for base in cdpath.split(":"):
        if not base:
            continue
        cand = os.path.join(st.cwd, base, target)
        if os.path.isdir(cand):
            return os.path.normpath(cand)
    return ""


def pwd(ctx: BuiltinContext) -> int:
    physical = False
    for flag in PWD.scan(ctx.args):  # operands are ignored, as in bash
        physical = flag.letter == "P"
    cwd = ctx.state.cwd
    ctx.write((os.path.realpath(cwd) if physical else cwd) + "\n")
    return 0


def register(reg: BuiltinRegistry) -> None:
    reg.register("echo", echo, "write arguments to standard output", "echo [-neE] [arg ...]")
    reg.register("cat", cat, "concatenate files (or standard input, `-`) to standard output", "cat [-n] [file ...]")
    reg.register("cd", cd, "change the shell's working directory", "cd [-L|[-P [-e]] [-@]] [dir]")
    reg.register("pwd", pwd, "print the shell's working directory", "pwd [-LP]")
