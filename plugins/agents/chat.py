"""`chat [--system TEXT] [-c | --continue] [-s NAME | --session NAME] [PROMPT...]`: send a prompt (and/or stdin)
to the model and stream the answer.

As in Simon Willison's `llm`, text piped in comes first and the prompt after it, so
`cat notes.txt | chat "Summarise:"` asks about the notes. Every chat is a stored conversation (a session, named
RUN.PID unless `--session NAME` names it): `chat --continue` goes on with the last one, `chat --session NAME` with
that one, in this run or a later one; while its KV is still resident the engine reuses it.
"""

from __future__ import annotations

from aiosh.api import AgentContext, agent, opt

USAGE = "chat [--system TEXT] [-c|--continue] [-s|--session NAME] [PROMPT...]"


@agent("chat", description="send a prompt (and/or stdin) to the model, stream the answer", usage=USAGE,
       sched_class="normal", operands="[PROMPT...]", intermixed=True, options=[
           opt("--system", metavar="TEXT", help="a system message, for a new conversation"),
           opt("-c", "--continue", dest="resume", help="continue the last conversation"),
           opt("-s", "--session", metavar="NAME", help="continue (or start) the conversation NAME"),
       ])
async def main(ctx: AgentContext) -> int:
    system = ctx.args["system"]
    session = ctx.args["session"]
    resume = bool(ctx.args["resume"]) or session is not None
    words = ctx.operands
    if resume and session is None:
        session = await ctx.llm.last_session()
        if session is None:
            ctx.stderr.write("chat: --continue: no earlier conversation to continue\n")
            return 1
    if resume and not session:
        ctx.stderr.write("chat: --session: the name is empty\n")
        return 2
    piped = await ctx.stdin.read()
    prompt = " ".join(words)
    text = "\n\n".join(t for t in (piped.strip(), prompt.strip()) if t)
    if not text:
        ctx.stderr.write(f"chat: nothing to send: give a prompt or pipe text in (usage: {USAGE})\n")
        return 2
    history = await ctx.llm.history(session) if resume else []
    if session is None:
        session = f"{ctx.run}.{ctx.pid}"
    if not history and system:
        history = [{"role": "system", "content": system}]
    messages = [*history, {"role": "user", "content": text}]
    async for chunk in ctx.llm.stream_chat(messages, session=session):
        ctx.stdout.write(chunk)
    ctx.stdout.write("\n")
    return 0
