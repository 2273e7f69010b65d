"""The memory manager: each agent's short-term key/value scratch area, in RAM within quotas, backed by storage.

Every entry is written through to the `memories` table as it is set (one record, committed at once), so the RAM
copy is a cache: over a quota (`memory.per_agent_tokens` for one agent, `memory.total_tokens` for all together)
the least recently used entries leave RAM — they stay in the database, `get` brings one back (a "fault"), and
`search` finds them with everything else. Nothing is dropped silently. With storage off (`storage.enabled =
false`) evicted entries are kept in a cold dict in RAM instead, outside the quota, and search is a plain word match.

Sizes are counted in tokens of the loaded model (`Model.tokenize`, exact for it): the key plus the value's text.
An agent's conversation is not counted here: the context manager bounds it by the context window, and every turn
is in the `messages` table.

Isolation: an agent reads and writes only its own entries; `read_other` asks the access manager
("memory.read_other", default deny) and every answer is audited.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .services import Call, Services, Syscalls
from .storage import SearchHit, Storage

if TYPE_CHECKING:
    from .access import AccessManager

__all__ = ["AgentMemory", "MemoryManager", "MemoryStats"]

_MISSING = object()


@dataclass
class _Entry:
    key: str
    value: Any
    text: str  # the stored form: the string itself, or JSON for other values
    is_json: bool
    kind: str  # kv | note
    tokens: int


@dataclass
class _Space:
    pid: int
    agent: str
    resident: OrderedDict[str, _Entry] = field(default_factory=OrderedDict)  # least recently used first
    evicted: dict[str, _Entry | None] = field(default_factory=dict)  # None: the value is only in storage
    tokens: int = 0
    notes: int = 0
    faults: int = 0
    evictions: int = 0


@dataclass(frozen=True)
class MemoryStats:
    """One agent's memory (or, with pid 0, everybody's)."""

    pid: int
    resident_entries: int
    resident_tokens: int
    evicted_entries: int
    evictions: int
    faults: int
    quota: int  # tokens; 0 = no quota


def _encode(value: Any) -> tuple[str, bool]:
    if isinstance(value, str):
        return value, False
    try:
        return json.dumps(value, ensure_ascii=False), True
    except (TypeError, ValueError):
        raise TypeError(f"memory values must be strings or JSON-serialisable, not {type(value).__name__}") from None


def _decode(text: str, is_json: bool) -> Any:
    return json.loads(text) if is_json else text


class MemoryManager:
    """All agents' scratch areas. Methods are called on the kernel loop (and `stats` from any thread)."""

    def __init__(self, storage: Storage, *, per_agent_tokens: int, total_tokens: int,
                 count_tokens: Callable[[str], int], access: AccessManager | None = None) -> None:
        self.storage = storage
        self.per_agent_tokens = per_agent_tokens
        self.total_tokens = total_tokens
        self.count_tokens = count_tokens
        self.access = access
        self._spaces: dict[int, _Space] = {}
        self._lru: OrderedDict[tuple[int, str], None] = OrderedDict()  # every resident entry, LRU first
        self._total = 0
        self._lock = threading.RLock()

    # --- entries ----------------------------------------------------------------------------------------------
    def space(self, pid: int, agent: str = "") -> _Space:
        with self._lock:
            sp = self._spaces.get(pid)
            if sp is None:
                sp = self._spaces[pid] = _Space(pid, agent)
            return sp

    def put(self, pid: int, agent: str, key: str, value: Any, kind: str = "kv") -> list[str]:
        """Set an entry (write-through); returns the keys evicted to make room (this one included if it alone
        is over the quota)."""
        if not isinstance(key, str) or not key:
            raise ValueError("memory keys are non-empty strings")
        text, is_json = _encode(value)
        tokens = self.count_tokens(key) + self.count_tokens(text)
        with self._lock:
            sp = self.space(pid, agent)
            self._drop(sp, key)
            sp.resident[key] = _Entry(key, value, text, is_json, kind, tokens)
            sp.tokens += tokens
            self._total += tokens
            self._lru[(pid, key)] = None
            evicted = self._enforce(sp)
            resident = key not in evicted
        self.storage.save_memory(pid, agent or sp.agent, key, text, is_json=is_json, kind=kind, tokens=tokens,
                                 resident=resident)
        others = [k for k in evicted if k != key]
        if others:
            self.storage.set_resident(pid, others, False)
        return evicted

    def lookup(self, pid: int, key: str) -> tuple[str, Any]:
        """("hit", value) | ("stored", None): evicted, read it from storage | ("cold", value) | ("none", None)."""
        with self._lock:
            sp = self._spaces.get(pid)
            if sp is None:
                return "none", None
            e = sp.resident.get(key)
            if e is not None:
                sp.resident.move_to_end(key)
                self._lru.move_to_end((pid, key))
                return "hit", e.value
            if key in sp.evicted:
                cold = sp.evicted[key]
                return ("cold", cold.value) if cold is not None else ("stored", None)
            return "none", None

    def peek(self, pid: int, key: str) -> tuple[str, Any]:
        """Like `lookup`, for another agent's entry: its LRU order is left alone."""
        with self._lock:
            sp = self._spaces.get(pid)
            if sp is None:
                return "stored", None
            e = sp.resident.get(key)
            if e is not None:
                return "hit", e.value
            cold = sp.evicted.get(key)
            return ("cold", cold.value) if cold is not None else ("stored", None)

    def fault_in(self, pid: int, key: str, text: str, is_json: bool) -> Any:
        """An evicted entry read back from storage becomes resident again (and may push others out)."""
        value = _decode(text, is_json)
        with self._lock:
            sp = self._spaces.get(pid)
            if sp is None or key not in sp.evicted:
                return value
            kind = "note" if key.startswith("note:") else "kv"
            del sp.evicted[key]
            tokens = self.count_tokens(key) + self.count_tokens(text)
            sp.resident[key] = _Entry(key, value, text, is_json, kind, tokens)
            sp.tokens += tokens
            self._total += tokens
            self._lru[(pid, key)] = None
            sp.faults += 1
            evicted = self._enforce(sp)
        if key not in evicted:
            self.storage.set_resident(pid, [key], True)
        others = [k for k in evicted if k != key]
        if others:
            self.storage.set_resident(pid, others, False)
        return value

    def delete(self, pid: int, key: str) -> bool:
        with self._lock:
            sp = self._spaces.get(pid)
            if sp is None:
                return False
            found = self._drop(sp, key)
        if found:
            self.storage.delete_memory(pid, key)
        return found

    def keys(self, pid: int) -> list[str]:
        with self._lock:
            sp = self._spaces.get(pid)
            return [] if sp is None else sorted([*sp.resident, *sp.evicted])

    def next_note_key(self, pid: int, agent: str) -> str:
        with self._lock:
            sp = self.space(pid, agent)
            sp.notes += 1
            while f"note:{sp.notes}" in sp.resident or f"note:{sp.notes}" in sp.evicted:
                sp.notes += 1
            return f"note:{sp.notes}"

    def release(self, pid: int) -> None:
        """The agent exited: its RAM is freed; its entries stay in storage (searchable, readable with a grant)."""
        with self._lock:
            sp = self._spaces.pop(pid, None)
            if sp is None:
                return
            for key in sp.resident:
                self._lru.pop((pid, key), None)
            self._total -= sp.tokens
        self.storage.release_memory(pid)

    # --- quotas -----------------------------------------------------------------------------------------------
    def _drop(self, sp: _Space, key: str) -> bool:
        e = sp.resident.pop(key, None)
        if e is not None:
            sp.tokens -= e.tokens
            self._total -= e.tokens
            self._lru.pop((sp.pid, key), None)
            return True
        if key in sp.evicted:
            del sp.evicted[key]
            return True
        return False

    def _evict(self, sp: _Space, key: str) -> None:
        e = sp.resident.pop(key)
        sp.tokens -= e.tokens
        self._total -= e.tokens
        self._lru.pop((sp.pid, key), None)
        sp.evicted[key] = None if self.storage.enabled else e
        sp.evictions += 1

    def _enforce(self, sp: _Space) -> list[str]:
        """Evict least recently used entries until both quotas hold; returns the keys of `sp` evicted."""
        out: list[str] = []
        if self.per_agent_tokens:
            while sp.tokens > self.per_agent_tokens and sp.resident:
                key = next(iter(sp.resident))
                self._evict(sp, key)
                out.append(key)
        if self.total_tokens:
            while self._total > self.total_tokens and self._lru:
                pid, key = next(iter(self._lru))
                victim = self._spaces[pid]
                self._evict(victim, key)
                if victim is sp:
                    out.append(key)
                else:
                    self.storage.set_resident(pid, [key], False)
        return out

    # --- observation ------------------------------------------------------------------------------------------
    def stats(self, pid: int = 0) -> MemoryStats:
        with self._lock:
            spaces = [self._spaces[pid]] if pid in self._spaces else ([] if pid else list(self._spaces.values()))
            return MemoryStats(
                pid=pid, resident_entries=sum(len(s.resident) for s in spaces),
                resident_tokens=sum(s.tokens for s in spaces), evicted_entries=sum(len(s.evicted) for s in spaces),
                evictions=sum(s.evictions for s in spaces), faults=sum(s.faults for s in spaces),
                quota=self.per_agent_tokens if pid else self.total_tokens,
            )

    def local_search(self, pid: int, query: str, limit: int) -> list[SearchHit]:
        """With storage off: entries (resident and cold) that contain the most of the query's words."""
        words = [w.lower() for w in re.findall(r"\w+", query)]
        if not words:
            return []
        with self._lock:
            sp = self._spaces.get(pid)
            if sp is None:
                return []
            entries = [*sp.resident.values(), *(e for e in sp.evicted.values() if e is not None)]
        scored = []
        for e in entries:
            hay = f"{e.key} {e.text}".lower()
            n = sum(1 for w in words if w in hay)
            if n:
                scored.append((-n, e))
        scored.sort(key=lambda x: x[0])
        return [SearchHit("memory", self.storage.run, pid, e.key, e.text, float(s), kind=e.kind)
                for s, e in scored[:limit]]


class AgentMemory:
    """`ctx.memory`: the agent's own key/value scratch area and notes, and search over what it has stored.

    Every method is a syscall (kind "memory"): it waits while the agent is stopped and refuses once it was killed.
    """

    def __init__(self, sc: Syscalls, services: Services) -> None:
        self._sc = sc
        self._services = services

    @property
    def _mm(self) -> MemoryManager:
        return self._services.memory

    async def set(self, key: str, value: Any) -> None:
        """Keep `value` (a string or anything JSON-serialisable) under `key`, replacing what was there."""
        async with self._call(f"set {key}") as call:
            evicted = self._mm.put(self._sc.pid, self._sc.agent, key, value)
            call.outcome = f"ok: evicted {len(evicted)}" if evicted else "ok"

    async def get(self, key: str, default: Any = None) -> Any:
        """The value under `key` (read back from storage if it was evicted), else `default`."""
        async with self._call(f"get {key}") as call:
            how, value = self._mm.lookup(self._sc.pid, key)
            if how == "stored":
                got = await self._blocking(self._mm.storage.memory_value, self._mm.storage.run, self._sc.pid, key)
                if got is None:
                    how, value = "none", None
                else:
                    value = self._mm.fault_in(self._sc.pid, key, got[0], got[1])
            call.outcome = "ok" if how != "none" else "ok: no such key"
        return default if how == "none" else value

    async def delete(self, key: str) -> bool:
        async with self._call(f"delete {key}") as call:
            found = self._mm.delete(self._sc.pid, key)
            call.outcome = "ok" if found else "ok: no such key"
        return found

    async def note(self, text: str) -> str:
        """Keep a free-text note (found later by `search`); returns its key (note:N)."""
        key = self._mm.next_note_key(self._sc.pid, self._sc.agent)
        async with self._call(f"note {key}"):
            self._mm.put(self._sc.pid, self._sc.agent, key, str(text), kind="note")
        return key

    async def keys(self) -> list[str]:
        async with self._call("keys"):
            return self._mm.keys(self._sc.pid)

    async def search(self, query: str, limit: int = 5) -> list[SearchHit]:
        """Full-text search (FTS5, bm25-ranked) over this agent's stored messages (including the earlier turns of
        the conversations it takes part in) and its memory entries, evicted ones included; best first."""
        async with self._call(f"search {query}") as call:
            mm, pid = self._mm, self._sc.pid
            if mm.storage.enabled:
                convs = self._services.context.conversations_of(pid)
                hits = await self._blocking(
                    lambda: mm.storage.search(query, pid=pid, conversations=convs, limit=limit))
            else:
                hits = mm.local_search(pid, query, limit)
            call.outcome = f"ok: {len(hits)} found"
        return hits

    async def read_other(self, pid: int, key: str, default: Any = None) -> Any:
        """Another agent's entry: needs the "memory.read_other" grant (default deny); audited either way."""
        async with self._call(f"read_other {pid} {key}") as call:
            if not self._services.access.check(self._sc.pid, "memory.read_other", f"pid {pid} key {key}"):
                call.outcome = "denied"
                raise PermissionError(f"memory.read_other: process {self._sc.pid} may not read the memory of "
                                      f"process {pid}")
            how, value = self._mm.peek(pid, key)
            if how in ("hit", "cold"):
                return value
            got = await self._blocking(self._mm.storage.memory_value, self._mm.storage.run, pid, key)
            call.outcome = "ok" if got is not None else "ok: no such key"
        return default if got is None else _decode(*got)

    def stats(self) -> MemoryStats:
        return self._mm.stats(self._sc.pid)

    # --- helpers ----------------------------------------------------------------------------------------------
    @asynccontextmanager
    async def _call(self, detail: str) -> AsyncIterator[Call]:
        await self._sc.gate()
        await self._services.vocabulary_ready()  # quotas count tokens: the tokeniser loads off the loop
        async with self._sc.call("memory", detail) as call:
            yield call

    async def _blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        async with self._sc.wchan("memory"):
            return await loop.run_in_executor(self._services.pool, fn, *args)
