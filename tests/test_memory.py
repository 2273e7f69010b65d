"""kernel.memory and kernel.access: quotas with LRU eviction to storage, faults back, search over evicted entries,
storage off, isolation (default deny, audited), and `ctx.memory` from a real agent."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest
from aiosh.kernel.access import AccessManager
from aiosh.kernel.config import load_config
from aiosh.kernel.memory import MemoryManager
from aiosh.kernel.storage import Storage
from aiosh.kernel.streams import Pipe


def words(text: str) -> int:
    """A stand-in tokenizer for the unit tests: one token per word."""
    return len(text.split())


@pytest.fixture(autouse=True)
def xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))


@pytest.fixture
def store(tmp_path):
    s = Storage(tmp_path / "mem.db")
    yield s
    s.close()


def test_per_agent_quota_evicts_least_recently_used_to_storage(store):
    mm = MemoryManager(store, per_agent_tokens=10, total_tokens=0, count_tokens=words)
    assert mm.put(1, "a", "k1", "one two three four") == []  # 1 + 4 tokens
    assert mm.put(1, "a", "k2", "five six seven eight") == []  # 10 tokens: at the quota
    assert mm.lookup(1, "k1")[0] == "hit"  # k1 used: k2 is now the least recently used
    assert mm.put(1, "a", "k3", "nine ten") == ["k2"]
    assert mm.stats(1).resident_tokens <= 10 and mm.stats(1).evicted_entries == 1
    assert mm.lookup(1, "k2") == ("stored", None)
    rows = {r["key"]: r for r in store.query("SELECT key, value, resident FROM memories")}
    assert rows["k2"] == {"key": "k2", "value": "five six seven eight", "resident": 0}  # nothing dropped
    assert rows["k1"]["resident"] == 1 and rows["k3"]["resident"] == 1
    # reading it back makes it resident again, pushing out the least recently used one
    text, is_json = store.memory_value(store.run, 1, "k2")
    assert mm.fault_in(1, "k2", text, is_json) == "five six seven eight"
    assert mm.lookup(1, "k2")[0] == "hit" and mm.stats(1).faults == 1
    assert mm.stats(1).resident_tokens <= 10
    assert sorted(mm.keys(1)) == ["k1", "k2", "k3"]


def test_an_entry_over_the_quota_alone_goes_straight_to_storage(store):
    mm = MemoryManager(store, per_agent_tokens=5, total_tokens=0, count_tokens=words)
    big = "w " * 50
    assert mm.put(1, "a", "big", big) == ["big"]
    assert mm.lookup(1, "big") == ("stored", None)
    assert store.memory_value(store.run, 1, "big") == (big, False)


def test_total_quota_evicts_across_agents(store):
    mm = MemoryManager(store, per_agent_tokens=0, total_tokens=12, count_tokens=words)
    mm.put(1, "a", "x", "alpha beta gamma")  # 4
    mm.put(2, "b", "y", "delta epsilon zeta")  # 4
    mm.put(3, "c", "z", "eta theta iota")  # 4: 12, at the quota
    mm.put(3, "c", "w", "kappa")  # 2 more: the oldest entry of anybody goes (pid 1's x)
    assert mm.lookup(1, "x") == ("stored", None)
    assert mm.stats(0).resident_tokens <= 12
    assert store.query("SELECT pid, key, resident FROM memories WHERE resident = 0") == [
        {"pid": 1, "key": "x", "resident": 0}]


def test_search_finds_evicted_entries_ranked(store):
    mm = MemoryManager(store, per_agent_tokens=8, total_tokens=0, count_tokens=words)
    mm.put(1, "a", "note:1", "the blue whale is the largest animal", kind="note")
    mm.put(1, "a", "k", "whales sing")
    mm.put(1, "a", "k2", "unrelated text about trains and stations")
    assert mm.lookup(1, "note:1")[0] == "stored"  # evicted ...
    hits = store.search("largest blue whale", pid=1)
    assert hits and hits[0].label == "note:1" and hits[0].kind == "note"  # ... and found first
    assert store.search("largest blue whale", pid=2) == []  # scoped to the agent


def test_values_json_delete_and_release(store):
    mm = MemoryManager(store, per_agent_tokens=100, total_tokens=0, count_tokens=words)
    mm.put(1, "a", "cfg", {"n": 3, "tags": ["x"]})
    assert mm.lookup(1, "cfg") == ("hit", {"n": 3, "tags": ["x"]})
    assert store.memory_value(store.run, 1, "cfg") == (json.dumps({"n": 3, "tags": ["x"]}), True)
    with pytest.raises(TypeError):
        mm.put(1, "a", "bad", object())
    with pytest.raises(ValueError):
        mm.put(1, "a", "", "x")
    assert mm.delete(1, "cfg") and not mm.delete(1, "cfg")
    assert store.memory_value(store.run, 1, "cfg") is None
    mm.put(1, "a", "keep", "kept after exit")
    mm.release(1)
    assert mm.stats(0).resident_tokens == 0 and mm.keys(1) == []
    assert store.query("SELECT key, resident FROM memories") == [{"key": "keep", "resident": 0}]


def test_storage_off_keeps_evicted_entries_cold_in_ram():
    off = Storage(None, enabled=False)
    mm = MemoryManager(off, per_agent_tokens=4, total_tokens=0, count_tokens=words)
    mm.put(1, "a", "a", "red green blue")
    mm.put(1, "a", "b", "cyan magenta")
    assert mm.lookup(1, "a") == ("cold", "red green blue")  # not lost, even without a database
    assert [h.label for h in mm.local_search(1, "green", 5)] == ["a"]


def test_access_default_deny_grant_and_audit(store):
    am = AccessManager(audit=store.audit)
    assert am.check(2, "memory.read_other", "pid 1 key k") is False
    am.grant(2, "memory.read_other")
    assert am.check(2, "memory.read_other", "pid 1 key k") is True
    assert am.check(3, "memory.read_other") is False  # grants are per process
    am.revoke(2, "memory.read_other")
    assert am.check(2, "memory.read_other") is False
    rows = store.query("SELECT pid, capability, decision, detail FROM audit ORDER BY id")
    assert [(r["pid"], r["decision"]) for r in rows] == [(2, "deny"), (2, "grant"), (2, "allow"), (3, "deny"),
                                                         (2, "revoke"), (2, "deny")]
    assert rows[0]["capability"] == "memory.read_other" and rows[0]["detail"] == "pid 1 key k"


# --- ctx.memory from real agents ----------------------------------------------------------------------------------

AGENTS = textwrap.dedent('''
    import asyncio
    from aiosh.kernel.agent import agent

    @agent("memo", description="fills its memory past the quota, then reads and searches it")
    async def memo(ctx):
        for i in range(12):
            await ctx.memory.set(f"fact{i}", f"fact number {i} is about the colour {'violet' if i == 0 else 'grey'}")
        key = await ctx.memory.note("the secret harbour is called Quillby")
        st = ctx.memory.stats()
        ctx.print("evicted", st.evicted_entries, "resident", st.resident_tokens)
        ctx.print("fact0", await ctx.memory.get("fact0"))
        ctx.print("missing", await ctx.memory.get("nope", "default"))
        hits = await ctx.memory.search("violet colour")
        ctx.print("hit", hits[0].label if hits else None)
        hits = await ctx.memory.search("Quillby harbour")
        ctx.print("note", hits[0].label if hits else None, key)
        ctx.print("keys", len(await ctx.memory.keys()))
        await ctx.sleep(float(ctx.argv[0]) if ctx.argv else 0)
        return 0

    @agent("peek", description="tries to read another agent's memory")
    async def peek(ctx):
        await ctx.stdin.read()  # the test grants (or not) before closing stdin
        try:
            value = await ctx.memory.read_other(int(ctx.argv[0]), ctx.argv[1])
        except PermissionError as exc:
            ctx.print("denied:", exc)
            return 3
        ctx.print("read:", value)
        return 0
''')


@pytest.fixture(scope="module")
def mk(tmp_path_factory, kernel_factory):
    tmp = tmp_path_factory.mktemp("memk")
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CONFIG_HOME", str(tmp / "xdg-config"))
    mp.setenv("XDG_DATA_HOME", str(tmp / "xdg-data"))
    (tmp / "plugins").mkdir()
    (tmp / "plugins" / "memagents.py").write_text(AGENTS)
    cfg = load_config(cwd=tmp, overrides={
        "kernel": {"slots": 2, "kv_cells": 1024}, "model": {"n_ctx": 512},
        "storage": {"path": str(tmp / "k.db")}, "plugins": {"paths": [str(tmp / "plugins")]},
        "memory": {"per_agent_tokens": 60, "total_tokens": 1000},
    })
    k = kernel_factory(cfg)
    yield k
    k.shutdown()
    mp.undo()


def lines_of(pipe: Pipe) -> dict[str, str]:
    return {ln.split(" ", 1)[0]: ln.split(" ", 1)[1] for ln in pipe.read_all().splitlines() if " " in ln}


@pytest.mark.model
@pytest.mark.timeout(60)
def test_agent_memory_eviction_fault_and_search(mk):
    out = Pipe()
    pid = mk.spawn("memo", [], stdout=out)
    assert mk.wait(pid, 30) == (pid, 0)
    got = lines_of(out)
    evicted, _, resident = got["evicted"].partition(" resident ")
    assert int(evicted) > 0 and int(resident) <= 60  # the model's tokens count against the quota
    assert got["fact0"] == "fact number 0 is about the colour violet"  # read back from storage
    assert got["missing"] == "default"
    assert got["hit"] == "fact0"
    assert got["note"].split() == ["note:1", "note:1"]
    assert got["keys"] == "13"
    calls = mk.storage.query("SELECT kind, detail FROM syscalls WHERE run = ? AND pid = ?", (mk.storage.run, pid))
    assert sum(1 for c in calls if c["kind"] == "memory") >= 17
    rows = mk.storage.query("SELECT count(*) AS n FROM memories WHERE run = ? AND pid = ?", (mk.storage.run, pid))
    assert rows == [{"n": 13}]


@pytest.mark.model
@pytest.mark.timeout(60)
def test_reading_another_agents_memory_needs_a_grant(mk):
    owner_out = Pipe()
    owner = mk.spawn("memo", ["3"], stdout=owner_out)  # stays alive (sleeping) with its memory resident
    deadline = time.monotonic() + 10
    while len(mk.memory.keys(owner)) < 13 and time.monotonic() < deadline:
        time.sleep(0.05)
    out = Pipe()
    peek = mk.spawn("peek", [str(owner), "fact11"], stdout=out)
    assert mk.wait(peek, 20) == (peek, 3)
    assert out.read_all().startswith("denied: memory.read_other: process")
    audit = mk.storage.query("SELECT pid, capability, decision, detail FROM audit WHERE run = ? AND pid = ?",
                             (mk.storage.run, peek))
    assert audit == [{"pid": peek, "capability": "memory.read_other", "decision": "deny",
                      "detail": f"pid {owner} key fact11"}]
    out, gate = Pipe(), Pipe()
    peek2 = mk.spawn("peek", [str(owner), "fact11"], stdout=out, stdin=gate)
    mk.access.grant(peek2, "memory.read_other")
    gate.close()
    status = mk.wait(peek2, 20)
    text = out.read_all()
    assert status == (peek2, 0) and text == "read: fact number 11 is about the colour grey\n"
    mk.signal(owner, "TERM")
    mk.wait(owner, 10)
    # after the owner exited its entries are still readable with a grant (from storage)
    out, gate = Pipe(), Pipe()
    peek3 = mk.spawn("peek", [str(owner), "fact0"], stdout=out, stdin=gate)
    mk.access.grant(peek3, "memory.read_other")
    gate.close()
    assert mk.wait(peek3, 20) == (peek3, 0)
    assert out.read_all() == "read: fact number 0 is about the colour violet\n"


@pytest.mark.model
@pytest.mark.timeout(60)
def test_killed_agent_record_and_interrupted_syscall_are_stored(mk):
    pid = mk.spawn("memo", ["30"], stdout=Pipe())
    deadline = time.monotonic() + 10
    while mk.state(pid) != "S" or not any(r.kind == "sleep" for r in mk.syscalls(pid)):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    mk.signal(pid, "KILL")
    assert mk.wait(pid, 10) == (pid, 137)
    run = mk.storage.run
    assert mk.storage.query("SELECT state, status FROM processes WHERE run = ? AND pid = ?", (run, pid)) == [
        {"state": "Z", "status": 137}]
    calls = mk.storage.query("SELECT kind, outcome FROM syscalls WHERE run = ? AND pid = ? AND kind = 'sleep'",
                             (run, pid))
    assert calls == [{"kind": "sleep", "outcome": "interrupted"}]
    assert mk.memory.stats(pid).resident_entries == 0  # its RAM is freed; its entries stay stored
    assert mk.storage.query("SELECT count(*) AS n FROM memories WHERE run = ? AND pid = ? AND resident = 0",
                            (run, pid)) == [{"n": 13}]


def test_memory_module_has_no_shell_imports():
    src = (Path(__file__).resolve().parent.parent / "kernel")
    for name in ("storage.py", "memory.py", "context.py", "access.py"):
        text = (src / name).read_text()
        assert "import aiosh" not in text and "from aiosh" not in text and "textual" not in text
