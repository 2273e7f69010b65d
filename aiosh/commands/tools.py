"""Shell commands about tools and access control: `tools` and `audit`.

Each is a function `fn(kernel, args) -> text` that raises `UsageError` for bad arguments; `register` adds them to
a shell's builtin registry.
"""

from __future__ import annotations

import json
import shutil
import textwrap
import time
from collections.abc import Callable
from typing import Any

from aiosh.kernel.tools import describe_signature

from .argv import Syntax, UsageError, count, opt
from .catalog import TOOLS_HELP

__all__ = ["HELP", "UsageError", "audit", "register", "tools"]

HELP = TOOLS_HELP


def _flags(spec: Any) -> str:
    out = []
    if spec.irreversible:
        out.append("irreversible")
    return ",".join(out)


TOOLS = Syntax((opt("-l", "--long", help="everything, schema included"),), intermixed=True, end_of_options=False)
AUDIT = Syntax((
    opt("-n", metavar="N", type=count("-n"), default=20, missing="'': not a number", help="the last N decisions"),
    opt("--all", help="of every run"),
    opt("--pid", metavar="PID", type=count("--pid"), missing="'': not a number", help="of one process"),
), end_of_options=False, unknown="unknown argument")


def tools(kernel: Any, args: list[str], columns: int = 0) -> str:
    """`tools`: one line per tool (signature, description); `tools NAME` or `-l`: everything, schema included."""
    parsed = TOOLS.parse(args)
    long, names = parsed.values["long"], parsed.operands
    specs = kernel.tool_types()  # starts MCP servers not started yet (listing their tools is a first use)
    for n in names:
        if n not in specs:
            raise UsageError(f"{n}: no such tool")
    chosen = [specs[n] for n in names] if names else [specs[n] for n in sorted(specs)]
    if not chosen:
        return "no tools\n"
    lines: list[str] = []
    if names or long:
        for spec in chosen:
            lines.append(describe_signature(spec))
            lines.append(f"  {spec.description}")
            flags = _flags(spec)
            lines.append(f"  timeout {spec.timeout:g} s, at most {spec.concurrency} at once"
                         + (f", {flags} (asks before each call)" if flags else "")
                         + f"; from {kernel.agents.tool_origin(spec.name) or spec.module}")
            schema = json.dumps(spec.parameters, indent=2, ensure_ascii=False)
            lines.extend("  " + ln for ln in schema.splitlines())
            lines.append("")
        return "\n".join(lines).rstrip("\n") + "\n"
    sigs = [describe_signature(s) + (f"  [{_flags(s)}]" if _flags(s) else "") for s in chosen]
    width = min(max(len(s) for s in sigs), 60)
    columns = max(width + 30, columns or shutil.get_terminal_size((100, 24)).columns)
    for sig, spec in zip(sigs, chosen):
        # The whole first paragraph, wrapped to the terminal beside the signature: never cut off.
        desc = " ".join(spec.description.strip().split("\n\n")[0].split())
        wrapped = textwrap.wrap(desc, max(20, columns - width - 3)) or [""]
        if len(sig) > width:
            lines.append(sig)
            lines.extend(" " * (width + 2) + w for w in wrapped)
        else:
            lines.append(f"{sig:<{width}}  {wrapped[0]}".rstrip())
            lines.extend(" " * (width + 2) + w for w in wrapped[1:])
    if not names:
        lines.extend(_mcp_lines(kernel))
    return "\n".join(lines) + "\n"


def _mcp_lines(kernel: Any) -> list[str]:
    """One line per [mcp.NAME] server: its state, tools and calls (and why it failed)."""
    out = []
    for st in kernel.mcp.states() if getattr(kernel, "mcp", None) is not None else []:
        line = f"mcp server {st.name}: {st.state}, {st.tools} tools, {st.calls} calls ({st.transport}: {st.target})"
        if st.restarts:
            line += f", restarted {st.restarts}x"
        if st.last_error and st.state != "running":
            line += f"; {st.last_error}"
        out.append(line)
    return out


def audit(kernel: Any, args: list[str]) -> str:
    """`audit [-n N] [--all] [--pid PID]`: the last N access decisions (this run, or every run with --all)."""
    parsed = AUDIT.parse(args)
    if parsed.operands:
        raise UsageError(f"{parsed.operands[0]}: unknown argument")
    n, every, pid = parsed.values["n"], parsed.values["all"], parsed.values["pid"]
    rows = kernel.access.recent(n, pid=pid) if not every else None
    storage = kernel.storage
    if every or (not rows and storage.enabled):
        where, params = [], []
        if not every:
            where.append("a.run = ?")
            params.append(storage.run)
        if pid is not None:
            where.append("a.pid = ?")
            params.append(pid)
        sql = ("SELECT a.run, a.t, a.pid, a.capability, a.decision, a.detail, p.agent FROM audit a "
               "LEFT JOIN processes p ON p.run = a.run AND p.pid = a.pid"
               + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY a.id DESC LIMIT ?")
        rows = list(reversed(storage.query(sql, (*params, n))))
    if not rows:
        return "no access decisions yet\n"
    lines = [f"{'TIME':<8}  {'RUN:PID':>8}  {'AGENT':<10}  {'DECISION':<8}  {'CAPABILITY':<24}  DETAIL"]
    for r in rows:
        who = f"{r.get('run', storage.run)}:{r['pid']}"
        lines.append(f"{time.strftime('%H:%M:%S', time.localtime(r['t'])):<8}  {who:>8}  "
                     f"{(r.get('agent') or '-')[:10]:<10}  {r['decision']:<8}  {r['capability'][:40]:<24}  "
                     f"{(r.get('detail') or '')[:100]}")
    return "\n".join(lines) + "\n"


def register(registry: Any, kernel_getter: Callable[[], Any]) -> None:
    """Add `tools` and `audit` to a shell's builtin registry; `kernel_getter` returns the running Kernel."""

    def wrap(fn: Callable[[Any, list[str]], str]) -> Callable[[Any], int]:
        def builtin(ctx: Any) -> int:
            try:
                ctx.write(fn(kernel_getter(), list(ctx.args)))
            except UsageError as exc:
                return ctx.usage_error(str(exc))
            return 0

        return builtin

    registry.register("tools", wrap(tools), *HELP["tools"])
    registry.register("audit", wrap(audit), *HELP["audit"])
