"""`sql_query`: one read-only SELECT (or WITH … SELECT) on a SQLite file in the working folder."""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path

from aiosh.api import ToolContext, ToolError, tool

_ALLOWED_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                    getattr(sqlite3, "SQLITE_RECURSIVE", 33)}
MAX_CELL = 2000


def _strip_comments(sql: str) -> str:
    sql = re.sub(r"/\*.*?\*/", " ", sql, flags=re.S)
    return re.sub(r"--[^\n]*", " ", sql)


@tool(name="sql_query", timeout=10, concurrency=2, paths={"database": "read"})
def sql_query(ctx: ToolContext, database: str, query: str, max_rows: int = 50) -> dict:
    """Run one read-only SELECT (or WITH ... SELECT) query on a SQLite database file in the working folder.

    Args:
        database: the SQLite file, relative to the working folder
        query: a single SELECT or WITH statement
        max_rows: return at most this many rows
    """
    real = ctx.path(database, "read")
    if max_rows < 1:
        raise ToolError(f"max_rows must be at least 1, got {max_rows}")
    text = _strip_comments(query).strip().rstrip(";").strip()
    first = text.split(None, 1)[0].upper() if text else ""
    if first not in ("SELECT", "WITH"):
        raise ToolError("only a single SELECT or WITH statement is allowed")
    if not Path(real).is_file():
        raise ToolError(f"{database}: no such file")
    deadline = time.monotonic() + 8.0
    try:
        conn = sqlite3.connect(Path(real).as_uri() + "?mode=ro", uri=True, timeout=2.0)
    except sqlite3.Error as exc:
        raise ToolError(f"{database}: cannot open: {exc}") from None
    try:
        # Read-only twice over: the connection is mode=ro, and the authorizer allows reads only (no ATTACH,
        # no PRAGMA, no writes); the progress handler stops a runaway query.
        conn.set_authorizer(lambda action, *_: sqlite3.SQLITE_OK if action in _ALLOWED_ACTIONS
                            else sqlite3.SQLITE_DENY)
        conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline or ctx.cancelled.is_set() else 0,
                                  10_000)
        try:
            cur = conn.execute(text)
            rows = cur.fetchmany(max_rows + 1)
        except sqlite3.ProgrammingError as exc:
            raise ToolError(f"{exc}") from None
        except sqlite3.DatabaseError as exc:
            msg = str(exc)
            if msg == "interrupted":
                msg = "query took too long"
            elif "not authorized" in msg:
                msg = "not allowed: the query may only read"
            raise ToolError(msg) from None
        columns = [d[0] for d in cur.description or ()]
    finally:
        conn.close()

    def cell(v: object) -> object:
        if isinstance(v, bytes):
            return f"<{len(v)} bytes>"
        if isinstance(v, str) and len(v) > MAX_CELL:
            return v[:MAX_CELL] + "..."
        return v

    return {"columns": columns, "rows": [[cell(v) for v in r] for r in rows[:max_rows]],
            "truncated": len(rows) > max_rows}
