"""kernel.storage and the shell's storage commands: schema and migrations, runs, bad paths, storage off, reads
through the writer's barrier, and a SIGKILL of a whole aiosh process in the middle of a run."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiosh.kernel import storage as S
from aiosh.kernel.config import load_config
from aiosh.kernel.proc import Limits, ProcInfo, SyscallRecord
from aiosh.kernel.storage import Storage, StorageError, open_storage
from aiosh.kernel.streams import Pipe

from aiosh.commands import storage as cmds

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def xdg(tmp_path, monkeypatch):
    """Never touch the real user dirs."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))


def proc_info(pid: int, *, status: int | None = 0, state: str = "Z", agent: str = "chat",
              argv: tuple[str, ...] = ("hello",), created: float | None = None) -> ProcInfo:
    t = created or time.time() - 5
    return ProcInfo(
        pid=pid, ppid=0, pgid=pid, agent=agent, argv=argv, state=state, wchan="", nice=0, sched_class="normal",
        pri=20, boosted=False, created=t, started=t + 0.01, ended=(t + 2 if status is not None else 0.0),
        decode_s=0.5, tokens_in=30, tokens_out=12, kv_tokens=0, kv_bytes=0, swapped_bytes=0, switches=1,
        syscalls=2, status=status, limits=Limits(), recent_output="",
    )


def run_cmd(fn, storage: Storage, *argv: str) -> tuple[int, str, str]:
    out, err = Pipe(), Pipe()
    status = fn(SimpleNamespace(storage=storage), list(argv), out, err)
    out.close()
    err.close()
    return status, out.read_all(), err.read_all()


# --- schema, runs, migrations -------------------------------------------------------------------------------------

def test_schema_runs_and_wal(tmp_path):
    path = tmp_path / "a.db"
    with Storage(path) as s:
        assert s.run == 1
        tables = {r["name"] for r in s.query("SELECT name FROM sqlite_master WHERE type IN ('table')")}
        assert {"meta", "runs", "processes", "syscalls", "messages", "conversations", "memories", "history",
                "audit", "messages_fts", "memories_fts"} <= tables
        assert s.query("SELECT value FROM meta WHERE key = 'schema_version'") == [{"value": str(S.SCHEMA_VERSION)}]
        assert s.query("PRAGMA journal_mode") == [{"journal_mode": "wal"}]
    with Storage(path) as s2:
        assert s2.run == 2  # one run per kernel start; pids of earlier runs stay distinguishable
        runs = s2.query("SELECT id, ended FROM runs ORDER BY id")
        assert runs[0]["ended"] and not runs[1]["ended"]


def test_migrations_apply_in_order_and_newer_schema_refused(tmp_path, monkeypatch):
    path = tmp_path / "m.db"
    Storage(path).close()

    def v2(db):
        db.execute("ALTER TABLE history ADD COLUMN cwd TEXT")

    monkeypatch.setattr(S, "MIGRATIONS", [*S.MIGRATIONS, v2])
    monkeypatch.setattr(S, "SCHEMA_VERSION", 2)
    with Storage(path) as s:
        assert s.query("SELECT value FROM meta WHERE key = 'schema_version'") == [{"value": "2"}]
        assert "cwd" in {r["name"] for r in s.query("PRAGMA table_info(history)")}
    monkeypatch.setattr(S, "MIGRATIONS", S.MIGRATIONS[:1])
    monkeypatch.setattr(S, "SCHEMA_VERSION", 1)
    with pytest.raises(StorageError) as info:
        Storage(path)
    assert str(path) in str(info.value) and "newer" in str(info.value)


# --- bad paths: one line naming the path --------------------------------------------------------------------------

def _one_line_error(path) -> str:
    with pytest.raises(StorageError) as info:
        Storage(path)
    text = str(info.value)
    assert "\n" not in text and str(path) in text
    return text


def test_corrupt_database_is_one_line(tmp_path):
    bad = tmp_path / "garbage.db"
    bad.write_bytes(os.urandom(64) + b"this is not sqlite" * 300)
    assert "not a database" in _one_line_error(bad)


def test_unwritable_paths_are_one_line(tmp_path):
    afile = tmp_path / "plain-file"
    afile.write_text("x")
    assert "is not a folder" in _one_line_error(afile / "aiosh.db")
    assert "is a directory" in _one_line_error(tmp_path)
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            _one_line_error(ro / "aiosh.db")
        finally:
            ro.chmod(0o700)


def test_kernel_init_raises_storage_error_before_loading_the_model(tmp_path):
    from aiosh.kernel import Kernel

    bad = tmp_path / "garbage.db"
    bad.write_bytes(b"\x00garbage" * 500)
    cfg = load_config(cwd=tmp_path, overrides={"storage": {"path": str(bad)}})
    t0 = time.monotonic()
    with pytest.raises(StorageError) as info:
        Kernel(cfg)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)
    assert time.monotonic() - t0 < 1.0  # no model was loaded


# --- storage off, in RAM ------------------------------------------------------------------------------------------

def test_storage_disabled_and_in_memory(tmp_path):
    cfg = load_config(cwd=tmp_path, overrides={"storage": {"enabled": False}})
    off = open_storage(cfg.storage)
    assert not off.enabled and off.run == 0
    off.save_process(proc_info(1))
    off.history_add("echo a")
    assert off.history_list() == ["echo a"] and off.query("SELECT 1") == []
    off.close()
    assert not (tmp_path / "xdg-data").exists()  # nothing written anywhere
    status, _, err = run_cmd(cmds.last, off)
    assert status == 1 and err == "aiosh: last: storage is off (storage.enabled = false)\n"

    cfg = load_config(cwd=tmp_path, overrides={"storage": {"path": ":memory:"}})
    assert cfg.storage.path == ":memory:"
    with open_storage(cfg.storage) as mem:
        assert mem.enabled and mem.memory_db
        mem.save_messages("k", session=True, agent="chat", pid=1, messages=[("user", "where is the lighthouse", 5,
                                                                             None)])
        assert [h.text for h in mem.search("lighthouse")] == ["where is the lighthouse"]
    assert not list(tmp_path.glob("*memory*"))


def test_default_path_is_in_the_user_data_dir(tmp_path):
    cfg = load_config(cwd=tmp_path)
    with open_storage(cfg.storage) as s:
        assert Path(s.path) == tmp_path / "xdg-data" / "aiosh" / "aiosh.db"


# --- records, reads, search ---------------------------------------------------------------------------------------

def test_records_are_read_back_after_the_barrier(tmp_path):
    with Storage(tmp_path / "r.db") as s:
        s.save_process(proc_info(1, status=None, state="R"))
        s.save_process(proc_info(1, status=0))  # the exit replaces the running record
        rec = SyscallRecord(id=7, pid=1, kind="llm", detail="hi", t_queued=1.0, t_started=1.5, t_finished=2.0,
                            tokens_in=3, tokens_out=4, outcome="ok")
        s.save_syscall(rec)
        s.save_messages("s1", session=True, agent="chat", pid=1, messages=[
            ("user", "The capital of France is Paris.", 8, None), ("assistant", "Yes.", 2, {"cached_tokens": 0})])
        rows = s.query("SELECT pid, state, status FROM processes")
        assert rows == [{"pid": 1, "state": "Z", "status": 0}]
        assert s.query("SELECT kind, outcome FROM syscalls") == [{"kind": "llm", "outcome": "ok"}]
        assert [h.label for h in s.search("france capital?")] == ["user"]
        assert s.search("  ?! ") == []  # no words: nothing, not an FTS syntax error
        assert s.last_session("chat") == "s1"
        assert s.writes >= 4 and s.errors == 0


def test_history_across_runs(tmp_path):
    path = tmp_path / "h.db"
    with Storage(path) as s:
        s.history_add("chat hello")
        s.history_add("   ")  # blank lines are not history
        s.history_add("ps")
    with Storage(path) as s:
        s.history_add("logs 1")
        assert s.history_list() == ["chat hello", "ps", "logs 1"]
        assert s.history_list(2) == ["ps", "logs 1"]
        status, out, err = run_cmd(cmds.history, s, "-n", "2")
        assert status == 0 and err == ""
        assert out == "    2  ps\n    3  logs 1\n"
        assert run_cmd(cmds.history, s, "-x")[0] == 2


# --- shell commands -----------------------------------------------------------------------------------------------

@pytest.fixture
def filled(tmp_path):
    path = tmp_path / "c.db"
    with Storage(path) as s:  # run 1: an agent that finished, one that was running when aiosh died
        now = time.time()
        s.save_process(proc_info(1, status=0, argv=("--session", "trip", "plan a trip"), created=now - 100))
        s.save_messages("trip", session=True, agent="chat", pid=1, messages=[
            ("user", "plan a trip to the volcano", 6, None),
            ("assistant", "Pack boots.", 3, {"prompt_tokens": 20, "cached_tokens": 0, "finish": "eos"})])
        s.save_syscall(SyscallRecord(id=1, pid=1, kind="llm", detail="plan a trip", t_queued=time.time() - 3,
                                     t_started=time.time() - 2.9, t_finished=time.time() - 2, tokens_in=20,
                                     tokens_out=3, outcome="ok"))
        s.save_process(proc_info(2, status=None, state="R", agent="sleep", argv=("100",), created=now - 50))
        s.save_memory(2, "sleep", "plan", "bring the volcano map", is_json=False, kind="kv", tokens=5,
                      resident=True)
    s = Storage(path)  # run 2
    s.save_process(proc_info(1, status=137, agent="talker", argv=("50",)))
    yield s
    s.close()


def test_logs_of_this_and_earlier_runs(filled):
    status, out, err = run_cmd(cmds.logs, filled, "1:1")
    assert status == 0 and err == ""
    assert out.startswith("1:1  chat --session trip plan a trip\n")
    assert "session trip" in out and "plan a trip to the volcano" in out and "Pack boots." in out
    assert "(20 prompt, 0 cached, 3 out, eos)" in out and "syscalls:" in out and " llm " in out
    assert run_cmd(cmds.logs, filled, "--run", "1", "1")[1] == out
    status, out, _ = run_cmd(cmds.logs, filled, "1")  # this run's pid 1
    assert status == 0 and out.startswith("2:1  talker 50\n") and "137 (KILL)" in out
    status, out, _ = run_cmd(cmds.logs, filled, "-m", "1:1")
    assert "transcript:" in out and "syscalls:" not in out


def test_logs_errors_are_one_line(filled):
    assert run_cmd(cmds.logs, filled, "99") == (1, "", "aiosh: logs: 99: no such process in run 2\n")
    status, out, err = run_cmd(cmds.logs, filled)
    assert status == 2 and out == "" and err.count("\n") == 1 and err.startswith("aiosh: logs: ")
    assert f"usage: {cmds.USAGE['logs']}" in err
    for argv in (["--bogus", "1"], ["x"], ["1", "2"], ["--run"], ["--run", "1", "1:1"], ["0"]):
        status, _, err = run_cmd(cmds.logs, filled, *argv)
        assert status == 2 and err.startswith("aiosh: logs: ") and err.count("\n") == 1, argv


def test_last_lists_finished_and_lost_newest_first(filled):
    status, out, err = run_cmd(cmds.last, filled)
    assert status == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["RUN:PID", "STATUS", "STARTED"]
    assert [ln.split()[0] for ln in lines[1:]] == ["2:1", "1:2", "1:1"]  # the most recently started first
    assert "137 (KILL)" in lines[1] and "lost" in lines[2] and lines[3].split()[1] == "0"
    assert len(run_cmd(cmds.last, filled, "-n", "1")[1].splitlines()) == 2
    assert [ln.split()[0] for ln in run_cmd(cmds.last, filled, "--run", "1")[1].splitlines()[1:]] == ["1:2", "1:1"]
    assert run_cmd(cmds.last, filled, "-n", "zero")[0] == 2


def test_memsearch_finds_messages_and_memories(filled):
    status, out, err = run_cmd(cmds.memsearch, filled, "volcano")
    assert status == 0 and err == ""
    assert {ln.split()[0] for ln in out.splitlines()} == {"1:1", "1:2"}
    assert "memory" in out and "kv plan: bring the volcano map" in out
    out = run_cmd(cmds.memsearch, filled, "--memories", "volcano")[1]
    assert out.count("\n") == 1 and "1:2" in out
    out = run_cmd(cmds.memsearch, filled, "--pid", "1:1", "volcano")[1]
    assert out.count("\n") == 1 and "1:1" in out
    assert run_cmd(cmds.memsearch, filled, "nothing-like-this")[1] == ""
    status, _, err = run_cmd(cmds.memsearch, filled)
    assert status == 2 and err.startswith("aiosh: memsearch: nothing to search for")


# --- SIGKILL of the aiosh process ---------------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from aiosh.kernel import Kernel
    from aiosh.kernel.config import load_config
    from aiosh.kernel.streams import Pipe

    db, cwd, plugins = sys.argv[1:4]
    cfg = load_config(cwd=Path(cwd), overrides={
        "kernel": {"slots": 2, "kv_cells": 2048}, "model": {"n_ctx": 512},
        "storage": {"path": db}, "plugins": {"paths": [plugins]},
    })
    k = Kernel(cfg)
    done = []
    for i in range(2):
        pid = k.spawn("chat", ["--session", f"s{i}", f"Say the word apple{i}."], stdout=Pipe(),
                      options={"max_tokens": 6, "temperature": 0})
        assert k.wait(pid, 60) == (pid, 0)
        done.append(pid)
    k.history_add("chat --session s0 Say the word apple0.")
    out = Pipe()
    looper = k.spawn("looper", [], stdout=out)
    print("RUN", k.storage.run, "DONE", *done, "LOOPER", looper, flush=True)
    while True:
        chunk = out.read()
        if not chunk:
            break
        sys.stdout.write(chunk)
        sys.stdout.flush()
""")

LOOPER = textwrap.dedent("""
    from aiosh.kernel.agent import agent

    @agent("looper", description="chats turn after turn, noting each one")
    async def looper(ctx):
        messages = [{"role": "system", "content": "Answer briefly."}]
        i = 0
        while True:
            i += 1
            messages.append({"role": "user", "content": f"Give me a word about the number {i}."})
            reply = await ctx.llm.chat(messages, max_tokens=6, temperature=0, conversation="loop")
            messages.append({"role": "assistant", "content": reply})
            await ctx.memory.set(f"turn{i}", reply)
            ctx.print(f"TURN {i}")
""")


@pytest.mark.model
@pytest.mark.timeout(180)
def test_sigkill_mid_run_keeps_every_committed_record(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "looper.py").write_text(LOOPER)
    db = tmp_path / "kill.db"
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg-data"), "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
           "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(db), str(tmp_path), str(plugins)], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        header = child.stdout.readline().split()
        assert header and header[0] == "RUN", child.stderr.read()
        run, done, looper = int(header[1]), [int(x) for x in header[3:5]], int(header[6])
        turns = 0
        while turns < 3:
            line = child.stdout.readline()
            assert line, child.stderr.read()
            turns = int(line.split()[1])
        time.sleep(0.15)  # somewhere inside the next turn
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with Storage(db) as s:  # a new start of aiosh
        assert s.run == run + 1
        procs = {r["pid"]: r for r in s.query("SELECT * FROM processes WHERE run = ?", (run,))}
        for pid in done:
            assert procs[pid]["status"] == 0 and procs[pid]["state"] == "Z" and procs[pid]["agent"] == "chat"
            roles = [r["role"] for r in s.query("SELECT role FROM messages WHERE run = ? AND pid = ? ORDER BY id",
                                                (run, pid))]
            assert roles == ["user", "assistant"]
        assert procs[looper]["status"] is None  # it was running: its record says so
        lturns = s.query("SELECT content FROM messages WHERE run = ? AND pid = ? AND role = 'assistant'",
                         (run, looper))
        assert len(lturns) >= turns - 1  # at most the turn in flight (and its queued record) is lost
        keys = {r["key"] for r in s.query("SELECT key FROM memories WHERE run = ? AND pid = ?", (run, looper))}
        assert {f"turn{i}" for i in range(1, turns)} <= keys
        assert s.history_list() == ["chat --session s0 Say the word apple0."]
        assert s.query("PRAGMA integrity_check") == [{"integrity_check": "ok"}]
        status, out, _ = run_cmd(cmds.last, s, "--run", str(run))
        assert status == 0 and f"{run}:{looper}" in out and "lost" in out
        status, out, _ = run_cmd(cmds.logs, s, f"{run}:{done[0]}")
        assert status == 0 and "apple0" in out
        meta = json.loads(s.query("SELECT meta FROM messages WHERE run = ? AND pid = ? AND role = 'assistant'",
                                  (run, done[0]))[0]["meta"])
        assert meta["finish"] in ("eos", "length", "stop")
