"""`map [-j N] AGENT [ARGS...]`: run AGENT once per line of standard input, in parallel.

Each child gets ARGS plus the line as its last argument; children run in map's process group (so `kill --
-PGID` ends the whole family) and die with it. Their outputs are printed in input order once each has ended;
their error output goes to map's stderr. Exit status 0 if every child succeeded, else 1 (2 for a usage error).
The children inherit map's run options, limits and class (`map --max-tokens 2 --class idle chat` runs each chat
with at most 2 tokens a call, as idle), never more than map has.
"""

from __future__ import annotations

import asyncio

from aiosh.api import AgentContext, agent, opt

USAGE = "map [-j N] AGENT [ARGS...] < LINES"


@agent("map", description="run an agent once per input line, in parallel; outputs in input order", usage=USAGE,
       sched_class="batch", operands="AGENT [ARGS...]", options=[
           opt("-j", "--jobs", metavar="N", type=int, min=1, default=0, help="at most N children at once "
               "(default: one per line)"),
       ])
async def main(ctx: AgentContext) -> int:
    jobs = int(ctx.args["jobs"])
    args = ctx.operands
    if not args:
        ctx.stderr.write(f"map: missing AGENT (usage: {USAGE})\n")
        return 2
    name, fixed = args[0], args[1:]
    lines = [ln.rstrip("\r\n") for ln in (await ctx.stdin.read()).splitlines()]
    lines = [ln for ln in lines if ln.strip()]
    if not lines:
        return 0
    limit = asyncio.Semaphore(jobs or len(lines))

    async def one(line: str) -> tuple[int, str, str]:
        async with limit:
            try:
                child = await ctx.spawn(name, [*fixed, line], die_with_parent=True)
            except PermissionError:
                raise
            except Exception as exc:  # noqa: BLE001 - an unknown agent: that line fails, the others run
                return 127, "", f"map: {name}: {exc}\n"
            out, err, (_pid, status) = await asyncio.gather(child.stdout.aread_all(), child.stderr.aread_all(),
                                                            ctx.wait(child.pid))
            return status, out, err

    results = await asyncio.gather(*[one(ln) for ln in lines])
    for _status, out, err in results:
        if out:
            ctx.stdout.write(out if out.endswith("\n") else out + "\n")
        if err:
            ctx.stderr.write(err)
    return 0 if all(s == 0 for s, _, _ in results) else 1
