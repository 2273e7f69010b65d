"""Agents used only by the tests (loaded through plugins.paths, like a user's plugin folder)."""

from __future__ import annotations

import asyncio
import time

from aiosh.kernel.agent import AgentContext, agent


@agent("raiser", description="raises at once (a buggy agent)")
async def raiser(ctx: AgentContext) -> int:
    ctx.print("about to fail")
    raise RuntimeError("deliberate failure in raiser")


@agent("handler", description="catches TERM and returns 7")
async def handler(ctx: AgentContext) -> int:
    try:
        await ctx.sleep(30)
    except asyncio.CancelledError:
        ctx.print(f"caught signal {ctx.signal}")
        return 7
    return 0


@agent("talker", description="streams a long completion (for signals while decoding)")
async def talker(ctx: AgentContext) -> int:
    n = int(ctx.argv[0]) if ctx.argv else 200
    async for chunk in ctx.llm.stream("Once upon a time", max_tokens=n, ignore_eos=True, temperature=0):
        ctx.stdout.write(chunk)
    return 0


@agent("parent", description="spawns N sleeping children; then waits for them or exits early")
async def parent(ctx: AgentContext) -> int:
    n, secs, mode = int(ctx.argv[0]), ctx.argv[1], ctx.argv[2]  # mode: wait | leave | die-with
    kids = [await ctx.spawn("sleep", [secs], die_with_parent=(mode == "die-with")) for _ in range(n)]
    ctx.print(" ".join(str(k.pid) for k in kids))
    if mode == "wait":
        statuses = [(await ctx.wait(k.pid))[1] for k in kids]
        return 0 if all(s == 0 for s in statuses) else 1
    await ctx.sleep(0.2)
    return 0


@agent("blocker", description="blocks the kernel loop (a badly written agent)")
async def blocker(ctx: AgentContext) -> int:
    time.sleep(float(ctx.argv[0]) if ctx.argv else 1.0)
    return 0


@agent("after_kill", description="keeps calling the kernel after being killed")
async def after_kill(ctx: AgentContext) -> int:
    while True:
        try:
            await ctx.sleep(0.05)
        except asyncio.CancelledError:
            continue


@agent("writer", description="writes a file through the write_file tool (an irreversible action)",
       needs=("tool:write_file", "write:./"))
async def writer(ctx: AgentContext) -> int:
    path, text = ctx.argv[0], ctx.argv[1]
    try:
        await ctx.tool("write_file", path=path, content=text)
    except PermissionError as exc:
        ctx.stderr.write(f"writer: {exc}\n")
        return 126
    ctx.print("written")
    return 0
