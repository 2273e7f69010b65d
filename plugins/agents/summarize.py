"""`summarize [--words N] [INSTRUCTIONS...]`: summarise standard input, streamed.

A long input is cut into chunks that fit the context window; each chunk is summarised on its own and the final
summary (streamed) is written from those notes (map-reduce), so nothing is silently truncated.
"""

from __future__ import annotations

from aiosh.api import AgentContext, agent, opt

USAGE = "summarize [--words N] [INSTRUCTIONS...] < TEXT"
CHUNK_CHARS = 3000  # about 750 tokens: a chunk, the instructions and the reply fit a 2048-token window
SYSTEM = "You write short, faithful summaries. Keep names, numbers and decisions; add nothing."


def _chunks(text: str, size: int) -> list[str]:
    """Pieces of at most `size` characters, cut at paragraph, line or sentence ends where possible."""
    out: list[str] = []
    rest = text.strip()
    while len(rest) > size:
        cut = max(rest.rfind("\n\n", 0, size), rest.rfind("\n", 0, size), rest.rfind(". ", 0, size))
        cut = cut + 1 if cut > size // 2 else size
        out.append(rest[:cut].strip())
        rest = rest[cut:].strip()
    if rest:
        out.append(rest)
    return out


@agent("summarize", description="summarise standard input (streamed); long input in chunks", usage=USAGE,
       needs=(), operands="[INSTRUCTIONS...]", intermixed=True, options=[
           opt("--words", metavar="N", type=int, min=1, default=80, help="about how long the summary is"),
       ])
async def main(ctx: AgentContext) -> int:
    words, extra = int(ctx.args["words"]), ctx.operands
    text = (await ctx.stdin.read()).strip()
    if not text:
        ctx.stderr.write(f"summarize: nothing to summarise on standard input (usage: {USAGE})\n")
        return 2
    ask = " ".join(extra).strip()
    temp = {} if ctx.options.get("temperature") is not None else {"temperature": 0.3}
    note_tokens = min(160, int(ctx.options.get("max_tokens") or 160))
    rounds = 0
    while len(text) > CHUNK_CHARS and rounds < 4:  # map: notes per chunk, until the notes fit one call
        rounds += 1
        notes = []
        for piece in _chunks(text, CHUNK_CHARS):
            notes.append((await ctx.llm.chat([
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"Summarise this part of a longer text in a few sentences:\n\n{piece}"},
            ], max_tokens=note_tokens, **temp)).strip())
        text = "\n\n".join(n for n in notes if n)
    if len(text) > CHUNK_CHARS:
        text = text[:CHUNK_CHARS]
    prompt = f"Summarise the text below in at most {words} words."
    if ask:
        prompt += f" {ask}"
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"{prompt}\n\n{text}"}]
    budget = {} if ctx.options.get("max_tokens") else {"max_tokens": max(32, words * 2)}
    async for chunk in ctx.llm.stream_chat(messages, **budget, **temp):
        ctx.stdout.write(chunk)
    ctx.stdout.write("\n")
    return 0
