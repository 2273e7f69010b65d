"""`memory_search`: full-text search over the calling agent's own memory entries and messages."""

from __future__ import annotations

from aiosh.api import ToolContext, tool


@tool(name="memory_search", timeout=10, concurrency=4)
def memory_search(ctx: ToolContext, query: str, limit: int = 5) -> list[dict]:
    """Search your own memory (entries and earlier messages) for words; best matches first.

    Args:
        query: the words to look for
        limit: at most this many results
    """
    hits = ctx.search_memory(query, max(1, min(int(limit), 50)))
    return [{"source": h.source, "label": h.label, "text": h.text[:500]} for h in hits]
