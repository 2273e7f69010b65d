"""The storage manager: one SQLite database (through sqlite-utils) for processes, syscalls, transcripts, memory,
shell history and the audit log.

Writes: one writer thread owns the connection and takes records from a queue; each record (a process state
change, a finished syscall, one turn of a conversation, a memory entry …) is one transaction, committed as soon as
the writer takes it — never per token. WAL with synchronous=NORMAL: a SIGKILL of the aiosh process loses at most
the records still in the queue (the turns in flight), never the database.

Reads: `read(fn)` waits until what was queued before it is written, then runs `fn(conn)` on a fresh read-only
connection on the caller's thread (so a slow `logs` never holds up the writer). An in-memory database (`path =
":memory:"`) cannot be shared between connections: its reads run on the writer thread instead.

A kernel start is one *run* (a row of `runs`): pids restart at 1 each run, so a process is (run, pid).
The schema is versioned (`meta.schema_version`) and grows by the `MIGRATIONS` list, applied in order at open.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import queue
import re
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlite_utils import Database  # imported where a schema is created: most starts never need it

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Storage", "StorageError", "fts_query", "open_storage"]

BUSY_TIMEOUT_S = 5.0
SETUP_LOCK_S = 30.0  # how long a start waits for another aiosh that is setting the same database up
BARRIER_TIMEOUT_S = 5.0


class StorageError(Exception):
    """The database cannot be used; the message is one line that names its path."""


# ── schema ──────────────────────────────────────────────────────────────────────────────────────────────────────

def _v1(db: Database) -> None:
    """The first schema. Idempotent (IF NOT EXISTS everywhere), so a migration cut short can run again."""
    db.table("runs").create({"id": int, "started": float, "ended": float, "os_pid": int, "host": str, "model": str,
                       "storage": str}, pk="id", if_not_exists=True)
    db.table("processes").create({
        "run": int, "pid": int, "ppid": int, "pgid": int, "agent": str, "argv": str, "state": str, "nice": int,
        "class": str, "created": float, "started": float, "ended": float, "tokens_in": int, "tokens_out": int,
        "decode_s": float, "switches": int, "syscalls": int, "status": int, "updated": float,
    }, pk=("run", "pid"), if_not_exists=True)
    db.table("syscalls").create({
        "run": int, "id": int, "pid": int, "kind": str, "detail": str, "t_queued": float, "t_started": float,
        "t_first": float, "t_finished": float, "tokens_in": int, "tokens_out": int, "outcome": str,
    }, pk=("run", "id"), if_not_exists=True)
    db.table("conversations").create({
        "key": str, "session": int, "agent": str, "run": int, "pid": int, "created": float, "updated": float,
        "turns": int,
    }, pk="key", if_not_exists=True)
    db.table("messages").create({
        "id": int, "run": int, "pid": int, "conversation": str, "role": str, "content": str, "tokens": int,
        "t": float, "meta": str,
    }, pk="id", if_not_exists=True)
    db.table("memories").create({
        "id": int, "run": int, "pid": int, "agent": str, "key": str, "value": str, "json": int, "kind": str,
        "tokens": int, "created": float, "updated": float, "resident": int,
    }, pk="id", if_not_exists=True)
    db.table("history").create({"id": int, "run": int, "t": float, "line": str}, pk="id", if_not_exists=True)
    db.table("audit").create({"id": int, "run": int, "t": float, "pid": int, "capability": str, "decision": str,
                        "detail": str}, pk="id", if_not_exists=True)
    for sql in (
        "CREATE INDEX IF NOT EXISTS processes_ended ON processes (ended)",
        "CREATE INDEX IF NOT EXISTS syscalls_pid ON syscalls (run, pid)",
        "CREATE INDEX IF NOT EXISTS messages_pid ON messages (run, pid)",
        "CREATE INDEX IF NOT EXISTS messages_conversation ON messages (conversation, id)",
        "CREATE INDEX IF NOT EXISTS conversations_updated ON conversations (agent, updated)",
        "CREATE UNIQUE INDEX IF NOT EXISTS memories_key ON memories (run, pid, key)",
        "CREATE INDEX IF NOT EXISTS audit_pid ON audit (run, pid)",
    ):
        db.execute(sql)
    for table, columns in (("messages", ["content"]), ("memories", ["key", "value"])):
        if not db[f"{table}_fts"].exists():
            db.table(table).enable_fts(columns, create_triggers=True)


MIGRATIONS: list[Callable[[Database], None]] = [_v1]
SCHEMA_VERSION = len(MIGRATIONS)


def fts_query(text: str) -> str:
    """A user's words as an FTS5 query: each word quoted (no syntax errors on `?` or `-`), any of them matching;
    bm25 ranks rows that match more of them first. "" when there is no word at all."""
    words = re.findall(r"\w+", text)
    return " OR ".join(f'"{w}"' for w in words)


@dataclass(frozen=True)
class SearchHit:
    """One row found by full-text search, messages and memories alike; lower `score` is better (bm25)."""

    source: str  # message | memory
    run: int
    pid: int
    label: str  # the message's role or the memory's key
    text: str
    score: float
    conversation: str = ""
    kind: str = ""  # for memories: kv | note
    t: float = 0.0


_STOP = object()


class Storage:
    """The database of one kernel run: writes queued to one writer thread, reads on read-only connections."""

    def __init__(self, path: str | os.PathLike | None, *, enabled: bool = True, run_info: dict | None = None) -> None:
        self.enabled = bool(enabled) and path is not None
        self.path = ":memory:" if path is None else str(path)
        self.memory_db = self.path == ":memory:"
        self.run = 0
        self.errors = 0  # writes that failed after start-up (disk full, …); the first is reported on stderr
        self.last_error = ""
        self.writes = 0
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._history: list[str] = []  # when disabled, history lives here for the life of the kernel
        self._closed = False
        self._thread: threading.Thread | None = None
        if not self.enabled:
            return
        self._ready = threading.Event()
        self._open_error: BaseException | None = None
        self._thread = threading.Thread(target=self._writer, args=(dict(run_info or {}),), name="aiosh-storage",
                                        daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._open_error is not None:
            self._thread.join(timeout=5)
            self._thread = None
            raise self._open_error

    # --- the writer thread ------------------------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        where = self.path
        if not self.memory_db:
            p = Path(self.path)
            if p.is_dir():
                raise StorageError(f"{where}: is a directory, not a database file")
            for parent in (p.parent, *p.parent.parents):
                if parent.exists():
                    if not parent.is_dir():
                        raise StorageError(f"{where}: {parent} is not a folder")
                    break
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"{where}: cannot create its folder: {exc.strerror or exc}") from None
        with self._setup_lock():
            try:
                conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S)
            except sqlite3.Error as exc:
                raise StorageError(f"{where}: cannot open database: {exc}") from None
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # reads the header: garbage fails
                self._quick_check(conn)
                if not self.memory_db:
                    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                    if str(mode).lower() != "wal":
                        raise sqlite3.OperationalError(f"cannot switch to WAL (journal_mode is {mode})")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA foreign_keys=ON")
                self._migrate(conn)
            except sqlite3.Error as exc:
                conn.close()
                raise StorageError(f"{where}: cannot use database: {exc}") from None
            except StorageError:
                conn.close()
                raise
        return conn

    @contextlib.contextmanager
    def _setup_lock(self) -> Iterator[None]:
        """Two aiosh processes starting together on one data folder take turns to set the database up (WAL,
        schema migrations): SQLite's busy timeout covers ordinary writes, not a schema being created twice at
        once (`CREATE VIRTUAL TABLE … fts5` by both: "already exists", or "database is locked")."""
        if self.memory_db:
            yield
            return
        try:
            fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:  # a read-only folder: go ahead without the lock (the open reports what is wrong)
            yield
            return
        try:
            deadline = time.monotonic() + SETUP_LOCK_S
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise StorageError(f"{self.path}: another aiosh has been setting this database up for "
                                           f"more than {SETUP_LOCK_S:g} s") from None
                    time.sleep(0.02)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _quick_check(self, conn: sqlite3.Connection) -> None:
        """A damaged database is reported at start-up (PRAGMA quick_check), never used silently."""
        if self.memory_db:
            return
        rows = [str(r[0]) for r in conn.execute("PRAGMA quick_check(20)").fetchall()]
        if rows != ["ok"]:
            more = f" (and {len(rows) - 1} more problems)" if len(rows) > 1 else ""
            raise StorageError(f"{self.path}: the database is damaged: {' '.join(rows[0].split())}{more}; move "
                               "it away (aiosh starts a new one) or recover it with: sqlite3 FILE .recover")

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Bring the schema to SCHEMA_VERSION. sqlite-utils (with click, pluggy and dateutil, about a third of
        `aiosh -c 'echo hi'`) is imported only when there is something to create."""
        has_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() if has_meta else None
        version = int(row[0]) if row else 0
        if version == SCHEMA_VERSION:
            return
        from sqlite_utils import Database

        db = Database(conn, execute_plugins=False)
        db.table("meta").create({"key": str, "value": str}, pk="key", if_not_exists=True)
        if version > SCHEMA_VERSION:
            raise StorageError(f"{self.path}: database schema version {version} is newer than this aiosh "
                               f"understands ({SCHEMA_VERSION})")
        for number in range(version + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[number - 1](db)
            with conn:
                conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                             "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (str(number),))

    def _writer(self, run_info: dict) -> None:
        try:
            conn = self._open()
            with conn:
                cur = conn.execute(
                    "INSERT INTO runs (started, os_pid, host, model, storage) VALUES (?, ?, ?, ?, ?)",
                    (time.time(), os.getpid(), socket.gethostname(), str(run_info.get("model", "")), self.path))
                self.run = int(cur.lastrowid or 0)
        except StorageError as exc:
            self._open_error = exc
            self._ready.set()
            return
        except sqlite3.Error as exc:
            self._open_error = StorageError(f"{self.path}: cannot use database: {exc}")
            self._ready.set()
            return
        self._ready.set()
        try:
            while True:
                op = self._q.get()
                if op is _STOP:
                    break
                kind, payload = op
                if kind == "write":
                    self._apply(conn, payload)
                elif kind == "barrier":
                    payload.set()
                elif kind == "call":  # a read on an in-memory database
                    fn, box, done = payload
                    try:
                        box["value"] = fn(conn)
                    except BaseException as exc:  # noqa: BLE001 - handed back to the caller
                        box["error"] = exc
                    done.set()
        finally:
            try:
                with conn:
                    conn.execute("UPDATE runs SET ended = ? WHERE id = ?", (time.time(), self.run))
                if not self.memory_db:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error:
                pass
            conn.close()

    def _apply(self, conn: sqlite3.Connection, statements: list[tuple[str, tuple]]) -> None:
        """One record: its statements in one transaction, committed at once."""
        try:
            with conn:
                for sql, params in statements:
                    conn.execute(sql, params)
            self.writes += 1
        except sqlite3.Error as exc:
            self.errors += 1
            if not self.last_error:
                print(f"aiosh: storage: {self.path}: {exc} (later errors are counted, not shown)",
                      file=sys.stderr, flush=True)
            self.last_error = str(exc)

    def _put(self, *statements: tuple[str, tuple]) -> None:
        if self.enabled and not self._closed:
            self._q.put(("write", list(statements)))

    # --- lifecycle --------------------------------------------------------------------------------------------
    def flush(self, timeout: float = BARRIER_TIMEOUT_S) -> bool:
        """Wait until every record queued before this call is committed (True), or `timeout` passed."""
        if not self.enabled or self._thread is None:
            return True
        done = threading.Event()
        self._q.put(("barrier", done))
        return done.wait(timeout)

    def close(self) -> None:
        """Write what is queued, mark the run ended, close the connection."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._q.put(_STOP)
            self._thread.join(timeout=30)
            self._thread = None

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reads ------------------------------------------------------------------------------------------------
    def read(self, fn: Callable[[sqlite3.Connection], Any], *, default: Any = None) -> Any:
        """Run fn(conn) on a read-only connection after the queued writes; `default` when storage is off."""
        if not self.enabled:
            return default
        self.flush()
        if self.memory_db:
            if self._thread is None:
                return default
            done = threading.Event()
            box: dict[str, Any] = {}
            self._q.put(("call", (fn, box, done)))
            if not done.wait(30):
                raise StorageError(f"{self.path}: read timed out")
            if "error" in box:
                raise box["error"]
            return box.get("value")
        try:
            conn = sqlite3.connect(Path(self.path).absolute().as_uri() + "?mode=ro", uri=True,
                                   timeout=BUSY_TIMEOUT_S)
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot read database: {exc}") from None
        try:
            conn.row_factory = sqlite3.Row
            return fn(conn)
        finally:
            conn.close()

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        """Rows as dicts ([] when storage is off)."""
        args = tuple(params)

        def run(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            cur = conn.execute(sql, args)
            names = [d[0] for d in cur.description or ()]
            return [dict(zip(names, row)) for row in cur.fetchall()]

        return self.read(run, default=[])

    # --- records ----------------------------------------------------------------------------------------------
    def save_process(self, info: Any) -> None:
        """A process at a state change (spawn, stop, continue, exit): the whole record, replacing the last."""
        if not self.enabled:
            return
        row = (self.run, info.pid, info.ppid, info.pgid, info.agent, json.dumps(list(info.argv)), info.state,
               info.nice, info.sched_class, info.created, info.started, info.ended, info.tokens_in,
               info.tokens_out, info.decode_s, info.switches, info.syscalls, info.status, time.time())
        self._put((_UPSERT_PROCESS, row))

    def save_syscall(self, rec: Any) -> None:
        if not self.enabled:
            return
        row = (self.run, rec.id, rec.pid, rec.kind, rec.detail, rec.t_queued, rec.t_started, rec.t_first,
               rec.t_finished, rec.tokens_in, rec.tokens_out, rec.outcome)
        self._put((_UPSERT_SYSCALL, row))

    def save_messages(self, conversation: str, *, session: bool, agent: str, pid: int,
                      messages: list[tuple[str, str, int, dict | None]], turn: bool = True) -> None:
        """One turn (or one compaction): its messages (role, content, tokens, meta) in one transaction."""
        if not self.enabled or not messages:
            return
        now = time.time()
        stmts: list[tuple[str, tuple]] = [(_UPSERT_CONVERSATION, (conversation, int(session), agent, self.run, pid,
                                                                  now, now, 1 if turn else 0))]
        for role, content, tokens, meta in messages:
            stmts.append((
                "INSERT INTO messages (run, pid, conversation, role, content, tokens, t, meta) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (self.run, pid, conversation, role, content, tokens, now, json.dumps(meta) if meta else None)))
        self._put(*stmts)

    def save_memory(self, pid: int, agent: str, key: str, value: str, *, is_json: bool, kind: str, tokens: int,
                    resident: bool) -> None:
        if not self.enabled:
            return
        now = time.time()
        self._put((_UPSERT_MEMORY, (self.run, pid, agent, key, value, int(is_json), kind, tokens, now, now,
                                    int(resident))))

    def set_resident(self, pid: int, keys: Iterable[str], resident: bool) -> None:
        if not self.enabled:
            return
        stmts = [("UPDATE memories SET resident = ? WHERE run = ? AND pid = ? AND key = ?",
                  (int(resident), self.run, pid, k)) for k in keys]
        if stmts:
            self._put(*stmts)

    def release_memory(self, pid: int) -> None:
        """The agent exited: its entries stay stored (and searchable) but none is resident any more."""
        self._put(("UPDATE memories SET resident = 0 WHERE run = ? AND pid = ?", (self.run, pid)))

    def delete_memory(self, pid: int, key: str) -> None:
        self._put(("DELETE FROM memories WHERE run = ? AND pid = ? AND key = ?", (self.run, pid, key)))

    def audit(self, pid: int, capability: str, decision: str, detail: str = "") -> None:
        self._put(("INSERT INTO audit (run, t, pid, capability, decision, detail) VALUES (?, ?, ?, ?, ?, ?)",
                   (self.run, time.time(), pid, capability, decision, detail)))

    def set_run_info(self, **info: str) -> None:
        for key in ("model",):
            if key in info:
                self._put((f"UPDATE runs SET {key} = ? WHERE id = ?", (str(info[key]), self.run)))

    def history_add(self, line: str) -> None:
        line = line.rstrip("\n")
        if not line.strip():
            return
        if not self.enabled:
            self._history.append(line)
            return
        self._put(("INSERT INTO history (run, t, line) VALUES (?, ?, ?)", (self.run, time.time(), line)))

    # --- queries used by the kernel and the shell commands ----------------------------------------------------
    def history_list(self, limit: int | None = None) -> list[str]:
        """Command lines of every run, oldest first (the last `limit` of them)."""
        if not self.enabled:
            return self._history[-limit:] if limit else list(self._history)
        if limit:
            rows = self.query("SELECT line FROM (SELECT id, line FROM history ORDER BY id DESC LIMIT ?) ORDER BY id",
                              (limit,))
        else:
            rows = self.query("SELECT line FROM history ORDER BY id")
        return [r["line"] for r in rows]

    def memory_value(self, run: int, pid: int, key: str) -> tuple[str, bool] | None:
        rows = self.query("SELECT value, json FROM memories WHERE run = ? AND pid = ? AND key = ?", (run, pid, key))
        return (rows[0]["value"], bool(rows[0]["json"])) if rows else None

    def last_session(self, agent: str) -> str | None:
        """The most recently used resumable conversation of an agent type (for `chat --continue`)."""
        rows = self.query("SELECT key FROM conversations WHERE agent = ? AND session = 1 "
                          "ORDER BY updated DESC, rowid DESC LIMIT 1", (agent,))
        return rows[0]["key"] if rows else None

    def conversation_rows(self, key: str) -> list[dict[str, Any]]:
        return self.query("SELECT id, run, pid, role, content, tokens, t, meta FROM messages "
                          "WHERE conversation = ? ORDER BY id", (key,))

    def search(self, query: str, *, run: int | None = None, pid: int | None = None,
               conversations: Iterable[str] = (), sources: tuple[str, ...] = ("message", "memory"),
               limit: int = 10) -> list[SearchHit]:
        """Full-text search (FTS5, bm25) over stored messages and memories; scoped to one process (its own
        rows plus the conversations it took part in) when pid is given, else to one run or to everything."""
        match = fts_query(query)
        if not match or not self.enabled:
            return []
        convs = list(conversations)
        parts: list[str] = []
        args: list[Any] = []

        def scope(alias: str, with_conv: bool) -> str:
            conds: list[str] = []
            if pid is not None:
                own = f"({alias}.run = ? AND {alias}.pid = ?)"
                args.extend([run if run is not None else self.run, pid])
                if with_conv and convs:
                    own = f"({own} OR {alias}.conversation IN ({', '.join('?' * len(convs))}))"
                    args.extend(convs)
                conds.append(own)
            elif run is not None:
                conds.append(f"{alias}.run = ?")
                args.append(run)
            return "".join(f" AND {c}" for c in conds)

        if "message" in sources:
            args.append(match)
            where = scope("m", True)
            parts.append(
                "SELECT 'message' AS source, m.run, m.pid, m.role AS label, m.content AS text, "
                "bm25(messages_fts) AS score, m.conversation, '' AS kind, m.t FROM messages_fts "
                "JOIN messages m ON m.id = messages_fts.rowid WHERE messages_fts MATCH ? AND m.role != 'compaction'"
                + where)
        if "memory" in sources:
            args.append(match)
            where = scope("e", False)
            parts.append(
                "SELECT 'memory' AS source, e.run, e.pid, e.key AS label, e.value AS text, "
                "bm25(memories_fts) AS score, '' AS conversation, e.kind, e.updated AS t FROM memories_fts "
                "JOIN memories e ON e.id = memories_fts.rowid WHERE memories_fts MATCH ?" + where)
        sql = " UNION ALL ".join(parts) + " ORDER BY score, t DESC LIMIT ?"
        args.append(limit)
        try:
            rows = self.query(sql, args)
        except sqlite3.OperationalError as exc:
            raise StorageError(f"{self.path}: search failed: {exc}") from None
        return [SearchHit(source=r["source"], run=r["run"], pid=r["pid"], label=r["label"], text=r["text"],
                          score=float(r["score"]), conversation=r["conversation"] or "", kind=r["kind"] or "",
                          t=float(r["t"] or 0)) for r in rows]


_UPSERT_PROCESS = (
    "INSERT INTO processes (run, pid, ppid, pgid, agent, argv, state, nice, class, created, started, ended, "
    "tokens_in, tokens_out, decode_s, switches, syscalls, status, updated) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run, pid) DO UPDATE SET "
    "ppid = excluded.ppid, pgid = excluded.pgid, state = excluded.state, nice = excluded.nice, "
    "class = excluded.class, started = excluded.started, ended = excluded.ended, tokens_in = excluded.tokens_in, "
    "tokens_out = excluded.tokens_out, decode_s = excluded.decode_s, switches = excluded.switches, "
    "syscalls = excluded.syscalls, status = excluded.status, updated = excluded.updated"
)
_UPSERT_SYSCALL = (
    "INSERT INTO syscalls (run, id, pid, kind, detail, t_queued, t_started, t_first, t_finished, tokens_in, "
    "tokens_out, outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run, id) DO UPDATE SET "
    "t_queued = excluded.t_queued, t_started = excluded.t_started, t_first = excluded.t_first, "
    "t_finished = excluded.t_finished, tokens_in = excluded.tokens_in, tokens_out = excluded.tokens_out, "
    "outcome = excluded.outcome"
)
_UPSERT_CONVERSATION = (
    "INSERT INTO conversations (key, session, agent, run, pid, created, updated, turns) VALUES (?, ?, ?, ?, ?, ?, "
    "?, ?) ON CONFLICT (key) DO UPDATE SET run = excluded.run, pid = excluded.pid, updated = excluded.updated, "
    "turns = conversations.turns + excluded.turns"
)
_UPSERT_MEMORY = (
    "INSERT INTO memories (run, pid, agent, key, value, json, kind, tokens, created, updated, resident) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run, pid, key) DO UPDATE SET value = excluded.value, "
    "json = excluded.json, kind = excluded.kind, tokens = excluded.tokens, updated = excluded.updated, "
    "resident = excluded.resident"
)


def open_storage(settings: Any, *, run_info: dict | None = None) -> Storage:
    """The kernel's storage from `[storage]` settings: off when `enabled = false`; RAM only for ":memory:"."""
    if not getattr(settings, "enabled", True):
        return Storage(None, enabled=False)
    if getattr(settings, "path", "") == ":memory:":
        return Storage(":memory:", run_info=run_info)
    return Storage(settings.effective_path, run_info=run_info)
