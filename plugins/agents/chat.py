"""`chat [--system TEXT] [PROMPT...]`: send a prompt (and/or stdin) to the model and stream the answer.

As in Simon Willison's `llm`, text piped in comes first and the prompt after it, so
`cat notes.txt | chat "Summarise:"` asks about the notes.
"""

from __future__ import annotations

from kernel.agent import AgentContext, agent

USAGE = "chat [--system TEXT] [PROMPT...]"


@agent("chat", description="send a prompt (and/or stdin) to the model, stream the answer", usage=USAGE,
       sched_class="normal")
async def main(ctx: AgentContext) -> int:
    system = None
    words: list[str] = []
    args = list(ctx.argv)
    while args:
        a = args.pop(0)
        if a == "--system":
            if not args:
                ctx.stderr.write("chat: --system: missing text\n")
                return 2
            system = args.pop(0)
        elif a.startswith("--system="):
            system = a.split("=", 1)[1]
        elif a == "--":
            words.extend(args)
            break
        elif a.startswith("--") and len(a) > 2:
            ctx.stderr.write(f"chat: {a}: unknown option (usage: {USAGE})\n")
            return 2
        else:
            words.append(a)
    piped = await ctx.stdin.read()
    prompt = " ".join(words)
    text = "\n\n".join(t for t in (piped.strip(), prompt.strip()) if t)
    if not text:
        ctx.stderr.write(f"chat: nothing to send: give a prompt or pipe text in (usage: {USAGE})\n")
        return 2
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    wrote_any = False
    async for chunk in ctx.llm.stream_chat(messages):
        ctx.stdout.write(chunk)
        wrote_any = wrote_any or bool(chunk)
    ctx.stdout.write("\n")
    return 0
