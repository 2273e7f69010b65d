"""`sql_query`: one read-only query on a SQLite file in the working folder.

It runs in a worker process (`isolated=True`: CPU and address-space limits, killed on timeout). What the query
may do is decided by SQLite itself, not by reading its text: the authorizer (`set_authorizer`) allows reading
tables and an allow-list of functions and denies everything else (writes, PRAGMA, ATTACH, `load_extension`,
`fts3_tokenizer` …). The database is read from the descriptor the kernel opened and checked (never by its path
again) into memory (`deserialize`): nothing the query does can reach the file. SQLite's own limits bound what
one value may be (`SQLITE_LIMIT_LENGTH`: `zeroblob(900000000)` fails at once instead of filling RAM), and the
result is capped in rows and in bytes. A trade-off of reading from the descriptor: a database in WAL mode is read
as its main file, so changes that are still only in its `-wal` file (not yet checkpointed) are not seen.
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Annotated

from aiosh.api import ToolContext, ToolError, tool

MAX_ROWS = 1000  # the largest max_rows a call may ask for
MAX_CELL = 2000  # characters of one text value returned
MAX_RESULT_BYTES = 1_000_000  # bytes of values returned by one call (the rest is cut, `truncated` says so)
MAX_DB_BYTES = 512 * 1024 * 1024  # a database file larger than this is refused
MAX_VALUE_BYTES = 10_000_000  # SQLITE_LIMIT_LENGTH: the largest string or blob a query may make
QUERY_SECONDS = 8.0

# SQLite functions a query may call: scalar and aggregate functions that compute from their arguments. Left out:
# anything that reaches outside the query (load_extension, fts3_tokenizer, readfile …) or makes big values.
_FUNCTION_NAMES = """
abs avg char coalesce count date datetime format glob group_concat hex ifnull iif instr julianday length like
likelihood likely lower ltrim max min nullif octet_length printf quote random replace round rtrim sign
soundex strftime string_agg substr substring sum time timediff total trim typeof unhex unicode unixepoch unlikely
upper acos acosh asin asinh atan atan2 atanh ceil ceiling cos cosh degrees exp floor ln log log10 log2 mod pi pow
power radians sin sinh sqrt tan tanh trunc json json_array json_array_length json_extract json_object json_quote
json_type json_valid json_group_array json_group_object row_number rank dense_rank percent_rank cume_dist ntile
lag lead first_value last_value nth_value
"""
FUNCTIONS = frozenset(_FUNCTION_NAMES.split())
_READ_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, getattr(sqlite3, "SQLITE_RECURSIVE", 33)}
_LIMITS = {
    "SQLITE_LIMIT_LENGTH": MAX_VALUE_BYTES,
    "SQLITE_LIMIT_SQL_LENGTH": 100_000,
    "SQLITE_LIMIT_COLUMN": 200,
    "SQLITE_LIMIT_EXPR_DEPTH": 100,
    "SQLITE_LIMIT_COMPOUND_SELECT": 50,
    "SQLITE_LIMIT_FUNCTION_ARG": 32,
    "SQLITE_LIMIT_ATTACHED": 0,
    "SQLITE_LIMIT_LIKE_PATTERN_LENGTH": 1000,
    "SQLITE_LIMIT_VARIABLE_NUMBER": 0,
    "SQLITE_LIMIT_TRIGGER_DEPTH": 0,
}


def _authorize(action: int, arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None) -> int:
    if action in _READ_ACTIONS:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in FUNCTIONS:
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def _load(fd: int, database: str) -> bytes:
    size = os.fstat(fd).st_size
    if size > MAX_DB_BYTES:
        raise ToolError(f"{database}: too large ({size} bytes, at most {MAX_DB_BYTES})")
    chunks = []
    got = 0
    while got <= size:
        chunk = os.read(fd, min(1 << 20, size + 1 - got))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    data = bytearray(b"".join(chunks))
    if len(data) >= 100 and data[:16] == b"SQLite format 3\x00" and data[18:20] == b"\x02\x02":
        data[18:20] = b"\x01\x01"  # a WAL database read as a legacy one: memory databases have no WAL
    return bytes(data)


@tool(name="sql_query", timeout=10, concurrency=2, paths={"database": "read"}, isolated=True, cpu_s=8,
      memory_mb=1024)
def sql_query(ctx: ToolContext, database: str, query: str,
              max_rows: Annotated[int, {"minimum": 1, "maximum": MAX_ROWS}] = 50) -> dict:
    """Run one read-only SELECT (or WITH ... SELECT) query on a SQLite database file in the working folder.

    Args:
        database: the SQLite file, relative to the working folder
        query: a single SELECT or WITH statement
        max_rows: return at most this many rows
    """
    if not 1 <= max_rows <= MAX_ROWS:
        raise ToolError(f"max_rows must be from 1 to {MAX_ROWS}, got {max_rows}")
    fd = ctx.open(database, "read")
    try:
        data = _load(fd, database)
    finally:
        os.close(fd)
    conn = sqlite3.connect(":memory:")
    deadline = time.monotonic() + QUERY_SECONDS
    try:
        try:
            conn.deserialize(data)
        except sqlite3.DatabaseError as exc:
            raise ToolError(f"{database}: not a SQLite database ({exc})") from None
        del data
        for name, value in _LIMITS.items():
            if hasattr(sqlite3, name):
                conn.setlimit(getattr(sqlite3, name), value)
        conn.set_authorizer(_authorize)
        conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline or ctx.cancelled.is_set() else 0,
                                  10_000)
        try:
            cur = conn.execute(query)
            if cur.description is None:
                raise ToolError("not a query: only a SELECT (or WITH ... SELECT) returns rows")
            columns = [d[0] for d in cur.description]
            rows: list[list[object]] = []
            size = 0
            truncated = False
            while True:
                row = cur.fetchone()
                if row is None:
                    break
                if len(rows) >= max_rows:
                    truncated = True
                    break
                cells = [_cell(v) for v in row]
                size += sum(_size(v) for v in cells)
                if size > MAX_RESULT_BYTES:
                    truncated = True
                    break
                rows.append(cells)
        except sqlite3.ProgrammingError as exc:
            raise ToolError(str(exc)) from None
        except sqlite3.DatabaseError as exc:
            msg = str(exc)
            if msg == "interrupted":
                msg = f"query took too long (more than {QUERY_SECONDS:g} s)"
            elif "not authorized" in msg or "prohibited" in msg:
                msg = f"not allowed: the query may only read tables and call plain functions ({msg})"
            raise ToolError(msg) from None
    finally:
        conn.close()
    return {"columns": columns, "rows": rows, "truncated": truncated}


def _cell(v: object) -> object:
    if isinstance(v, bytes):
        return f"<{len(v)} bytes>"
    if isinstance(v, str) and len(v) > MAX_CELL:
        return v[:MAX_CELL] + "..."
    return v


def _size(v: object) -> int:
    return len(v) if isinstance(v, str) else 8
