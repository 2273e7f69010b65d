"""help, agents, type: what the shell knows about its commands."""

from __future__ import annotations

from . import BuiltinContext, BuiltinRegistry
from .getopt import Options
from .lang import KEYWORDS  # (bash's reserved words, as `compgen -k` lists them: `command -V` uses them too)

TYPE = Options("aptP")

def help_(ctx: BuiltinContext) -> int:
    reg = ctx.session.builtins
    args = [a for a in ctx.args if a != "-s"]
    short = "-s" in ctx.args
    if not args:
        ctx.write("aiosh: a shell for agents. These commands are built in; `help NAME' tells more.\n")
        ctx.write("Agents (see `agents') run like programs: `chat hello', `sleep 5 &', `run chat --nice 5 hi'.\n\n")
        for name in reg.names():
            b = reg.get(name)
            assert b is not None
            ctx.write(f" {b.usage:<40.40} {b.help}\n")
        return 0
    status = 0
    for name in args:
        b = reg.get(name)
        if b is None:
            text = _agent_help(ctx, name)
            if text is None:
                status = ctx.error(f"no help topics match `{name}'.  Try `help help'.")
            elif short:
                ctx.write(f"{name}: {text.splitlines()[0].removeprefix('usage: ')}\n")
            else:
                ctx.write(text)
            continue
        if short:
            ctx.write(f"{name}: {b.usage}\n")
        else:
            ctx.write(f"{name}: {b.usage}\n    {b.help}\n")
            details = b.details_text()
            if details:
                ctx.write("".join(f"    {ln}\n" if ln else "\n" for ln in details.splitlines()))
    return status


def _agent_help(ctx: BuiltinContext, name: str) -> str | None:
    """An agent's help from its declaration (the same text as `NAME --help`), or None when it is no agent."""
    if name not in ctx.interp.launcher.agent_names():
        return None
    fn = getattr(ctx.session.agents, "agent_help", None)
    text = fn(name) if fn is not None else None
    return text or f"{name}: an agent\n"


def agents(ctx: BuiltinContext) -> int:
    """`agents`: each agent type with its one-line description (`help NAME` or `NAME --help` tells more)."""
    if ctx.args:
        return ctx.usage_error(f"{ctx.args[0]}: unexpected argument")
    names = ctx.interp.launcher.agent_names()
    describe = getattr(ctx.session.agents, "agent_description", None)
    width = max((len(n) for n in names), default=0)
    for name in names:
        desc = describe(name) if describe is not None else ""
        ctx.write(f"{name:<{width}}  {desc}".rstrip() + "\n")
    return 0


def type_(ctx: BuiltinContext) -> int:
    scan = TYPE.scan(ctx.args)
    mode = ""
    for flag in scan:
        mode = flag.letter
    args = scan.rest
    interp = ctx.interp

    def say(kind: str, desc: str, path: str = "") -> None:
        if mode == "t":
            ctx.write(kind + "\n")
        elif mode in ("p", "P"):
            if path:
                ctx.write(path + "\n")
        else:
            ctx.write(desc + "\n")

    status = 0
    for name in args:
        kinds: list[tuple[str, str, str]] = []
        if name in KEYWORDS:
            kinds.append(("keyword", f"{name} is a shell keyword", ""))
        if name in ctx.state.functions:
            kinds.append(("function", f"{name} is a function", ""))
        if name in ctx.session.builtins:
            kinds.append(("builtin", f"{name} is a shell builtin", ""))
        if name in interp.launcher.agent_names():
            kinds.append(("agent", f"{name} is an agent", ""))
        if ctx.session.host_programs:
            path, _status, _msg = interp.launcher.find_program(name)
            if path is not None:
                shown = name if "/" in name else path
                kinds.append(("file", f"{name} is {shown}", shown))
        if not kinds:
            status = 1
            if mode != "t":
                ctx.error(f"{name}: not found")
            continue
        for kind in kinds if mode == "a" else kinds[:1]:
            say(*kind)
    return status


def register(reg: BuiltinRegistry) -> None:
    reg.register("help", help_, "describe builtins", "help [-s] [name ...]")
    reg.register("agents", agents, "list the agent types the kernel can run, with what each does", "agents")
    reg.register("type", type_, "tell what a name is: keyword, builtin, agent or program", "type [-atpP] name ...")
