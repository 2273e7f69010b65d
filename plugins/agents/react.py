"""`react [--max-steps N] [--tools a,b] QUESTION...`: answer a question with tools, step by step (ReAct).

Each step the model picks a tool call through a grammar built from the tools' schemas (`ctx.llm.call_tool`), so
even a small model writes well-formed calls; the kernel runs it (`ctx.tool`: access-checked, validated, under
its timeout) and the result goes back to the model as the next turn. The first step must be a tool call; from
the second on the model may answer; after --max-steps (default 4) it must answer. Each step's call and result
go to stderr, the answer to stdout. The question comes from the arguments, else from stdin.
"""

from __future__ import annotations

import json

from aiosh.api import AgentContext, ToolError, agent, opt

USAGE = "react [--max-steps N] [--tools NAME,...] QUESTION..."
SYSTEM = ("You answer the user's question. Use a tool when it helps: call it, read its result, then answer "
          "briefly.")
MAX_OBSERVATION = 1000
FOLLOW_UP = "Answer the question, or call another tool."
# One worked example as earlier turns: small models follow a demonstration far better than a description.
DEMO = [
    {"role": "user", "content": "What is 3 plus 4, times 2?"},
    {"role": "assistant", "content": '{"tool": "calculator", "args": {"expression": "(3 + 4) * 2"}}'},
    {"role": "user", "content": f"calculator returned: 14\n{FOLLOW_UP}"},
    {"role": "assistant", "content": '{"answer": "(3 + 4) * 2 = 14"}'},
]


def _observation(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= MAX_OBSERVATION else text[:MAX_OBSERVATION] + "..."


@agent("react", description="answer a question with tools: think, call a tool, observe, answer", usage=USAGE,
       needs=("tool:*", "read:./", "write:./"), operands="QUESTION...", intermixed=True, options=[
           opt("--max-steps", metavar="N", type=int, min=1, default=4, help="tool calls before it must answer"),
           opt("--tools", metavar="NAME,...", help="offer only these tools (default: every tool it may call)"),
       ])
async def main(ctx: AgentContext) -> int:
    max_steps = int(ctx.args["max_steps"])
    tools = None if ctx.args["tools"] is None else [t.strip() for t in str(ctx.args["tools"]).split(",") if t.strip()]
    words = ctx.operands
    question = " ".join(words).strip() or (await ctx.stdin.read()).strip()
    if not question:
        ctx.stderr.write(f"react: no question (usage: {USAGE})\n")
        return 2
    opts: dict = {"conversation": "react"}
    if ctx.options.get("temperature") is None:
        opts["temperature"] = 0.0
    offered = tools if tools is not None else ctx.tool_names()
    demo = DEMO if "calculator" in offered else []
    messages = [{"role": "system", "content": SYSTEM}, *demo, {"role": "user", "content": question}]
    answer = None
    try:
        for step in range(1, max_steps + 1):
            choice = await ctx.llm.call_tool(messages, tools=tools, answer=step > 1, **opts)
            if choice.tool is None:  # an answer (choice.is_answer, spelled so that the type checker narrows it)
                answer = choice.answer
                break
            call = f"{choice.tool}({json.dumps(choice.args, ensure_ascii=False)})"
            ctx.stderr.write(f"[{step}] {call}\n")
            try:
                result = _observation(await ctx.tool(choice.tool, **choice.args))
                seen = f"{choice.tool} returned: {result}"
            except (ToolError, PermissionError) as exc:
                result = f"error: {exc}"
                seen = f"{choice.tool} failed: {exc}"
            ctx.stderr.write(f"    -> {result}\n")
            messages += [{"role": "assistant", "content": choice.raw},
                         {"role": "user", "content": f"{seen}\n{FOLLOW_UP}"}]
        if answer is None:
            messages[-1]["content"] = messages[-1]["content"].rsplit("\n", 1)[0] + "\nNow answer the question."
            answer = (await ctx.llm.call_tool(messages, tools=[], **opts)).answer
    except ToolError as exc:  # a reply cut off by max_tokens, an unknown tool in --tools
        ctx.stderr.write(f"react: {exc}\n")
        return 1
    ctx.stdout.write(f"{(answer or '').strip()}\n")
    return 0
