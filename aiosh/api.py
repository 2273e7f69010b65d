"""The public API for plugin authors: everything an agent, a tool or a scheduling policy may import.

Agents see the kernel only through the `AgentContext` handed to them; tools get a `ToolContext`; policies order
`SeqState`s. Import from here, not from `aiosh.kernel.*`: those modules are the kernel's inside and may change.

    from aiosh.api import AgentContext, agent

    @agent("hello", description="say hello")
    async def main(ctx: AgentContext) -> int:
        ctx.print(await ctx.llm.chat("Say hello."))
        return 0
"""

from __future__ import annotations

from aiosh.kernel.agent import AgentContext, AgentSpec, agent
from aiosh.kernel.argspec import Opt, opt
from aiosh.kernel.scheduler import NICE_0_WEIGHT, Policy, SeqState, nice_weight
from aiosh.kernel.tools import ToolContext, ToolError, ToolSpec, tool

__all__ = [
    "NICE_0_WEIGHT", "AgentContext", "AgentSpec", "Opt", "Policy", "SeqState", "ToolContext", "ToolError", "ToolSpec",
    "agent", "nice_weight", "opt", "tool",
]
