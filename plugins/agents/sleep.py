"""`sleep SECONDS`: wait, using no model; for scripts and tests, like Unix sleep."""

from __future__ import annotations

from aiosh.api import AgentContext, agent


@agent("sleep", description="wait SECONDS (fractions allowed), using no model", usage="sleep SECONDS...",
       sched_class="batch", operands="SECONDS...", options=[], uses_model=False)
async def main(ctx: AgentContext) -> int:
    if not ctx.operands:
        ctx.stderr.write("sleep: missing operand\n")
        return 1
    total = 0.0
    for arg in ctx.operands:
        try:
            seconds = float(arg)
        except ValueError:
            seconds = -1.0
        if seconds < 0 or seconds != seconds:
            ctx.stderr.write(f"sleep: invalid time interval '{arg}'\n")
            return 1
        total += seconds
    await ctx.sleep(total)
    return 0
