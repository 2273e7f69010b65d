"""let, getopts, trap, command, builtin, shopt, hash: the language builtins scripts use every day."""

from __future__ import annotations

import os
import signal

from ..errors import ExitShell, ShellError
from ..lexer import is_name
from ..quoting import plain_single_quote
from ..state import SHOPT_DEFAULTS
from . import BuiltinContext, BuiltinRegistry
from .getopt import OptionError, Options

# -- let -------------------------------------------------------------------------------------------------------


def let(ctx: BuiltinContext) -> int:
    """Each argument is an arithmetic expression; status 0 when the last one is non-zero."""
    if not ctx.args:
        return ctx.error("expression expected")
    from .. import arith

    value = 0
    for expr in ctx.args:
        try:
            value = arith.evaluate(expr, ctx.interp.variables.arith_vars()) if expr.strip() else 0
        except ShellError as exc:
            ctx.error(exc.message)
            return 1
    return 0 if value else 1


# -- getopts ---------------------------------------------------------------------------------------------------


def getopts(ctx: BuiltinContext) -> int:
    """POSIX getopts with bash's messages; the position inside a group of letters is kept per shell."""
    if len(ctx.args) < 2:
        return ctx.usage_error("usage: getopts optstring name [arg ...]")
    optstring, name = ctx.args[0], ctx.args[1]
    interp = ctx.interp
    args = ctx.args[2:] if len(ctx.args) > 2 else list(ctx.state.positional)
    try:
        optind = int(interp.get_var("OPTIND") or "1")
    except ValueError:
        optind = 1
    last = interp.state.getopts_last
    sub = last[1] if last[0] == optind else 0
    silent = optstring.startswith(":")

    def finish(opt: str, status: int) -> int:
        interp.variables.assign("OPTIND", str(optind))
        interp.state.getopts_last = (optind, sub)
        if not is_name(name):
            return ctx.error(f"`{name}': not a valid identifier")
        interp.variables.assign(name, opt)
        return status

    if optind < 1 or optind > len(args):
        interp.variables.unset_var("OPTARG")
        if optind > len(args):
            optind, sub = len(args) + 1, 0  # bash: past the end is the end (`set --` after a loop)
        return finish("?", 1)
    arg = args[optind - 1]
    if sub == 0:
        if arg == "--":
            optind += 1
            interp.variables.unset_var("OPTARG")
            return finish("?", 1)
        if not arg.startswith("-") or arg == "-":
            interp.variables.unset_var("OPTARG")
            return finish("?", 1)
        sub = 1
    c = arg[sub]
    sub += 1
    pos = optstring.find(c)
    if c == ":" or pos < 0:
        if sub >= len(arg):
            optind, sub = optind + 1, 0
        if silent:
            interp.variables.assign("OPTARG", c)
        else:
            ctx.interp.diag(ctx.io, f"illegal option -- {c}")
            interp.variables.unset_var("OPTARG")
        return finish("?", 0)
    if pos + 1 < len(optstring) and optstring[pos + 1] == ":":
        if sub < len(arg):
            interp.variables.assign("OPTARG", arg[sub:])
            optind, sub = optind + 1, 0
        elif optind < len(args):
            interp.variables.assign("OPTARG", args[optind])
            optind, sub = optind + 2, 0
        else:
            optind, sub = optind + 1, 0
            if silent:
                interp.variables.assign("OPTARG", c)
                return finish(":", 0)
            ctx.interp.diag(ctx.io, f"option requires an argument -- {c}")
            interp.variables.unset_var("OPTARG")
            return finish("?", 0)
        return finish(c, 0)
    interp.variables.unset_var("OPTARG")
    if sub >= len(arg):
        optind, sub = optind + 1, 0
    return finish(c, 0)


# -- alias, unalias ----------------------------------------------------------------------------------------------


def alias(ctx: BuiltinContext) -> int:
    """`alias [-p] [name[=value] …]`: define or show aliases (they expand in scripts after
    `shopt -s expand_aliases`, and at the prompt)."""
    aliases = ctx.state.aliases
    args = [a for a in ctx.args if a != "-p"]
    if args and args[0] == "--":
        args.pop(0)
    if not args:
        for name in sorted(aliases):
            ctx.write(f"alias {name}={plain_single_quote(aliases[name])}\n")
        return 0
    status = 0
    for arg in args:
        name, eq, value = arg.partition("=")
        if eq:
            if not name or any(c in name for c in " \t\n/$`=|&;()<>'\"\\"):
                status = ctx.error(f"`{name}': invalid alias name")
                continue
            aliases[name] = value
        elif name in aliases:
            ctx.write(f"alias {name}={plain_single_quote(aliases[name])}\n")
        else:
            status = ctx.error(f"{name}: not found")
    return status


def unalias(ctx: BuiltinContext) -> int:
    aliases = ctx.state.aliases
    if ctx.args[:1] == ["-a"]:
        aliases.clear()
        return 0
    if not ctx.args:
        return ctx.usage_error()
    status = 0
    for name in ctx.args:
        if aliases.pop(name, None) is None:
            status = ctx.error(f"{name}: not found")
    return status


# -- trap ------------------------------------------------------------------------------------------------------

SIGNAL_NAMES = {s.name[3:]: int(s) for s in signal.Signals if s.name.startswith("SIG") and not s.name.startswith("SIG_")}
PSEUDO = ("EXIT", "ERR", "DEBUG", "RETURN")


def signal_spec(spec: str) -> str | None:
    """Normalise `EXIT`, `0`, `INT`, `SIGINT`, `2`, `int` to bash's name; None when unknown."""
    up = spec.upper()
    if up.startswith("SIG"):
        up = up[3:]
    if up in PSEUDO:
        return up
    if spec == "0":
        return "EXIT"
    if spec.isdigit():
        n = int(spec)
        for name, num in SIGNAL_NAMES.items():
            if num == n:
                return name
        return None
    return up if up in SIGNAL_NAMES else None


def trap(ctx: BuiltinContext) -> int:
    """bash's trap.def: -l lists the signals as `kill -l` does, -p (or no operands) shows traps; otherwise
    ACTION SIG… (a lone signal, or a leading number, resets)."""
    st = ctx.state
    flags, args = TRAP.switches(ctx.args)
    if "l" in flags:
        from .jobctl import list_signals

        return list_signals(ctx, [])
    if "p" in flags or not args:
        shown = st.traps if st.shown_traps is None else st.shown_traps  # a subshell lists its parent's
        if not args:
            for trapped in sorted(shown, key=_trap_order):
                ctx.write(f"trap -- {plain_single_quote(shown[trapped])} {_shown(trapped)}\n")
            return 0
        status = 0
        for spec in args:
            name = signal_spec(spec)
            if name is None:
                status = ctx.error(f"{spec}: invalid signal specification")
            elif name in shown:
                ctx.write(f"trap -- {plain_single_quote(shown[name])} {_shown(name)}\n")
        return status
    first = args[0]
    if (first.isdigit() and signal_spec(first) is not None) or (len(args) == 1 and first != "-"
                                                                 and signal_spec(first) is not None):
        action, specs = "-", args  # `trap INT` / `trap 0 INT`: reset
    elif len(args) == 1:
        return ctx.usage_error()  # `trap cmd` without a signal
    else:
        action, specs = first, args[1:]
    status = 0
    for spec in specs:
        name = signal_spec(spec)
        if name is None:
            status = ctx.error(f"{spec}: invalid signal specification")
            continue
        if action == "-":
            st.traps.pop(name, None)
        else:
            st.traps[name] = action
        st.shown_traps = None
        if name in SIGNAL_NAMES and ctx.interp.main and ctx.interp.proc is None:
            ctx.session.signals.sync_trap(SIGNAL_NAMES[name], st.traps.get(name))
    return status


def _trap_order(name: str) -> int:
    """bash lists EXIT first, then signals by number, then DEBUG, ERR, RETURN."""
    if name == "EXIT":
        return 0
    return SIGNAL_NAMES.get(name, 100 + PSEUDO.index(name) if name in PSEUDO else 200)


def _shown(name: str) -> str:
    return name if name in PSEUDO else f"SIG{name}"


# -- command, builtin --------------------------------------------------------------------------------------------


COMMAND = Options("pvV")
SHOPT = Options("opqsu")
HASH = Options("dlp:rt")
TRAP = Options("lp")
EXEC = Options("cla:")
KEYWORDS = frozenset(["if", "then", "else", "elif", "fi", "case", "esac", "for", "select", "while", "until", "do", "done", "in", "function", "time", "{", "}", "!", "[[", "]]", "coproc"])


def command(ctx: BuiltinContext) -> int:
    scan = COMMAND.scan(ctx.args)
    mode = ""
    for flag in scan:
        if flag.letter in "vV":
            mode = flag.letter
    args = scan.rest
    if not args:
        return 0
    if mode:
        status = 0
        for name in args:
            found = describe(ctx, name, verbose=mode == "V")
            if found is None:
                if mode == "V":
                    ctx.error(f"{name}: not found")
                status = 1
            else:
                ctx.write(found + "\n")
        return status
    return ctx.interp.run_argv(args, ctx.io, skip_functions=True)


def describe(ctx: BuiltinContext, name: str, *, verbose: bool) -> str | None:
    """What `command -v` / `-V` print for a name."""
    st = ctx.state
    if name in st.functions:
        return f"{name} is a function" if verbose else name
    if name in KEYWORDS:
        return f"{name} is a shell keyword" if verbose else name
    if name in ctx.session.builtins:
        return f"{name} is a shell builtin" if verbose else name
    if name in ctx.interp.launcher.agent_names():
        return f"{name} is an agent" if verbose else name
    path, _status, _msg = ctx.interp.launcher.find_program(name)
    if path is None:
        return None
    shown = path if "/" in name or os.path.isabs(path) else path
    return f"{name} is {shown}" if verbose else shown


def exec_(ctx: BuiltinContext) -> int:
    """`exec COMMAND`: run it and end the shell with its status (the redirection-only form is the
    interpreter's: see Interp.exec_redirections)."""
    scan = EXEC.scan(ctx.args)
    flags = {flag.letter: flag.value for flag in scan}
    args = scan.rest
    if not args:
        return 0
    resolved = ctx.interp.launcher.resolve(list(args), skip_functions=True)
    if resolved.kind == "error" and resolved.status == 127:
        ctx.error(f"{args[0]}: not found")
        raise ExitShell(127)
    argv0 = flags.get("a")
    if "l" in flags:  # a login shell's name: `-` before it
        argv0 = "-" + (argv0 if argv0 is not None else args[0])
    raise ExitShell(ctx.interp.run_argv(args, ctx.io, skip_functions=True, argv0=argv0, clear_env="c" in flags))


def exec_without_command(args: list[str]) -> bool:
    """Whether `exec ARGS` names no command (`exec`, `exec -c --`, or a bad option, which the builtin then
    reports): its redirections stay for the shell, as bash keeps them whenever exec returns."""
    try:
        scan = EXEC.scan(args)
        for _flag in scan:
            pass
    except OptionError:
        return True
    return not scan.rest


def builtin(ctx: BuiltinContext) -> int:
    if not ctx.args:
        return 0
    name = ctx.args[0]
    b = ctx.session.builtins.get(name)
    if b is None:
        return ctx.error(f"{name}: not a shell builtin")
    from . import BuiltinContext as Ctx

    return b.call(Ctx(list(ctx.args), ctx.io, ctx.interp))


# -- shopt, hash (accepted so scripts that set them run) --------------------------------------------------------



def shopt(ctx: BuiltinContext) -> int:
    st = ctx.state
    if st.shopts is None:
        st.shopts = dict(SHOPT_DEFAULTS)
    opts = st.shopts
    scan = SHOPT.scan(ctx.args)
    mode = ""
    quiet = False
    for flag in scan:
        if flag.letter in "su":
            mode = flag.letter
        quiet = quiet or flag.letter == "q"
    args = scan.rest
    status = 0
    if not args:
        for name in sorted(opts):
            if mode == "" or opts[name] == (mode == "s"):
                ctx.write(f"{name:<15}\t{'on' if opts[name] else 'off'}\n")
        return 0
    for name in args:
        if name not in opts:
            status = ctx.error(f"{name}: invalid shell option name")
            continue
        if mode:
            opts[name] = mode == "s"
        elif not opts[name]:
            status = 1
            if not quiet:
                ctx.write(f"{name:<15}\toff\n")
        elif not quiet:
            ctx.write(f"{name:<15}\ton\n")
    return status


def hash_(ctx: BuiltinContext) -> int:
    """bash's hash.def: -r empties the table first, -d forgets, -p PATH remembers a path as given, -t prints the
    remembered paths, -l prints the table (or the -t lines) as `builtin hash -p PATH NAME` commands."""
    st = ctx.state
    created = st.hashed is not None  # bash's -d is quiet until something has been hashed
    table = st.hashed if st.hashed is not None else {}
    flags: dict[str, str | None] = {}
    scan = HASH.scan(ctx.args)
    for flag in scan:
        flags[flag.letter] = flag.value
    args = scan.rest
    portable = "l" in flags
    if not args and ("d" in flags or "t" in flags):  # bash's sh_needarg: no usage line, status 1
        return ctx.error(f"{'-d' if 'd' in flags else '-t'}: option requires an argument")
    if not args and "r" not in flags:
        if table:
            if not portable:
                ctx.write("hits\tcommand\n")
            for cmd, path in table.items():
                ctx.write(f"builtin hash -p {path} {cmd}\n" if portable else f"{st.hash_hits.get(cmd, 0):4d}\t{path}\n")
        elif not portable:
            ctx.write("hash: hash table empty\n")  # bash prints this on stdout
        return 0
    if "r" in flags:
        table.clear()
        st.hash_hits.clear()
    status = 0
    if "t" in flags:
        for name in args:
            where = table.get(name)
            if where is None:
                status = ctx.error(f"{name}: not found")
            elif portable:
                ctx.write(f"builtin hash -p {where} {name}\n")
            else:
                ctx.write(f"{name}\t{where}\n" if len(args) > 1 else f"{where}\n")
        return status
    pathname = flags.get("p")
    for name in args:
        if "/" in name:  # bash: an absolute program is never hashed
            continue
        if pathname is not None:
            if os.path.isdir(os.path.join(st.cwd, pathname)):
                status = ctx.error(f"{pathname}: Is a directory")
            else:
                table[name] = pathname
                st.hash_hits[name] = 0
                st.hashed = table
        elif "d" in flags:
            if table.pop(name, None) is None and created:
                status = ctx.error(f"{name}: not found")
            st.hash_hits.pop(name, None)
        elif name not in st.functions and name not in ctx.session.builtins:
            table.pop(name, None)
            found, _s, _m = ctx.interp.launcher.find_program(name)
            if found is None:
                status = ctx.error(f"{name}: not found")
            else:
                table[name] = found
                st.hash_hits[name] = 0
                st.hashed = table
    return status


def register(reg: BuiltinRegistry) -> None:
    reg.register("let", let, "evaluate arithmetic expressions; status 0 when the last is non-zero", "let arg [arg ...]")
    reg.register("getopts", getopts, "parse positional parameters as options", "getopts optstring name [arg ...]")
    reg.register("alias", alias, "define or show aliases", "alias [-p] [name[=value] ... ]")
    reg.register("unalias", unalias, "remove aliases", "unalias [-a] name [name ...]")
    reg.register("trap", trap, "run commands when the shell exits (EXIT), a command fails (ERR) or a signal comes",
                 "trap [-lp] [[arg] signal_spec ...]")  # fmt: skip
    reg.register("command", command, "run a command bypassing functions; -v / -V say what a name is",
                 "command [-pVv] command [arg ...]")  # fmt: skip
    reg.register("exec", exec_, "replace the shell with a command, or keep redirections for the rest of it",
                 "exec [-cl] [-a name] [command [argument ...]] [redirection ...]")  # fmt: skip
    reg.register("builtin", builtin, "run a shell builtin", "builtin [shell-builtin [arg ...]]")
    reg.register("shopt", shopt, "set and unset shell options (accepted; few have an effect)",
                 "shopt [-pqsu] [-o] [optname ...]")  # fmt: skip
    reg.register("hash", hash_, "remember the full paths of commands",
                 "hash [-lr] [-p pathname] [-dt] [name ...]")
