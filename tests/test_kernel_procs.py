"""Agent processes on the real model: spawn/wait, signals and statuses, limits, families, a stress run."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from aiosh.kernel import Kernel, NoSuchProcess, UnknownAgent
from aiosh.kernel import signals as S
from aiosh.kernel.config import load_config
from aiosh.kernel.proc import Limits
from aiosh.kernel.streams import Pipe

pytestmark = [pytest.mark.model, pytest.mark.timeout(120)]

AGENTS = str(Path(__file__).parent / "agents")


@pytest.fixture(scope="module")
def k(tmp_path_factory, monkeypatch_module, kernel_factory):
    cfg = load_config(cwd=tmp_path_factory.mktemp("cwd"), overrides={
        "kernel": {"slots": 4, "kv_cells": 8192, "watchdog_ms": 200},
        "plugins": {"paths": [AGENTS]},
    })
    kern = kernel_factory(cfg)
    yield kern
    kern.shutdown()


@pytest.fixture(scope="module")
def monkeypatch_module(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg")))
    yield mp
    mp.undo()


def wait_state(k: Kernel, pid: int, want: str, timeout: float = 10.0) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = k.state(pid)
        if st == want:
            return st
        time.sleep(0.01)
    return k.state(pid)


def wait_tokens(k: Kernel, pid: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = k.proc(pid).tokens_out
        if n > 0:
            return n
        time.sleep(0.02)
    return k.proc(pid).tokens_out


def test_spawn_wait_status_and_output(k):
    out = Pipe()
    pid = k.spawn("chat", ["Say hello."], stdout=out, options={"max_tokens": 12, "temperature": 0})
    assert k.proc(pid).ppid == 0
    got = k.wait(pid, 60)
    assert got == (pid, 0)
    text = out.read_all()
    assert text.strip()
    with pytest.raises(NoSuchProcess):
        k.proc(pid)  # collected: gone from the table


def test_pids_are_never_reused(k):
    a = k.spawn("sleep", ["0"])
    k.wait(a, 10)
    b = k.spawn("sleep", ["0"])
    k.wait(b, 10)
    assert b > a


def test_unknown_agent_and_bad_targets(k):
    with pytest.raises(UnknownAgent):
        k.spawn("no-such-agent")
    with pytest.raises(NoSuchProcess):
        k.signal(999999, S.SIGTERM)
    with pytest.raises(NoSuchProcess):
        k.signal(-999999, S.SIGTERM)
    with pytest.raises(NoSuchProcess):
        k.wait(999999, 1)
    with pytest.raises(ValueError):
        k.spawn("sleep", ["1"], sched_class="realtime")


def test_signals_while_others_decode(k):
    """TERM → 143, KILL → 137, INT → 130, STOP/CONT → T and back — while another agent keeps decoding."""
    busy = k.spawn("talker", ["120"], stdout=Pipe())
    term, kill, stop = (k.spawn("talker", ["400"], stdout=Pipe()) for _ in range(3))  # 4 talkers, 4 slots
    intr = k.spawn("sleep", ["30"])
    for pid in (term, kill, stop):
        assert wait_tokens(k, pid) > 0  # decoding for real, not just started
    k.signal(stop, "STOP")
    assert wait_state(k, stop, "T") == "T"
    tokens_at_stop = k.proc(stop).tokens_out
    k.signal(term, "TERM")
    k.signal(kill, S.SIGKILL)
    k.signal(intr, "INT")
    assert k.wait(term, 10) == (term, 143)
    assert k.wait(kill, 10) == (kill, 137)
    assert k.wait(intr, 10) == (intr, 130)
    time.sleep(0.5)
    assert k.proc(stop).state == "T"
    assert k.proc(stop).tokens_out <= tokens_at_stop + 1  # a stopped agent gets no tokens
    assert k.proc(stop).kv_tokens > 0 or k.proc(stop).swapped_bytes > 0  # its memory is kept (or swapped)
    before = k.proc(busy).tokens_out
    deadline = time.monotonic() + 20
    while k.proc(busy).tokens_out <= before + 2 and k.state(busy) != "Z" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert k.proc(busy).tokens_out > before + 2 or k.state(busy) == "Z"  # the others kept decoding
    k.signal(stop, "CONT")
    deadline = time.monotonic() + 20
    while k.proc(stop).tokens_out <= tokens_at_stop + 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert k.proc(stop).tokens_out > tokens_at_stop + 1  # decoding again after CONT
    k.signal(stop, "TERM")
    assert k.wait(stop, 10) == (stop, 143)
    assert k.wait(busy, 60) == (busy, 0)


def test_hup_default_and_zombie_state(k):
    pid = k.spawn("sleep", ["30"])
    k.signal(pid, "HUP")
    deadline = time.monotonic() + 5
    while k.state(pid) != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert k.state(pid) == "Z"  # exited, not yet collected
    assert k.signal(pid, "TERM") == []  # a zombie ignores signals
    assert k.wait(pid, 5) == (pid, 129)


def test_agent_that_raises_ends_with_1_and_traceback(k):
    err, out = Pipe(), Pipe()
    pid = k.spawn("raiser", stdout=out, stderr=err)
    other = k.spawn("sleep", ["0.1"])
    assert k.wait(pid, 10) == (pid, 1)
    text = err.read_all()
    assert "Traceback" in text and "deliberate failure in raiser" in text
    assert out.read_all() == "about to fail\n"
    assert k.wait(other, 10) == (other, 0)  # the kernel and other agents carry on


def test_agent_that_handles_term_returns_its_status(k):
    out = Pipe()
    pid = k.spawn("handler", stdout=out)
    assert wait_state(k, pid, "S") == "S"
    k.signal(pid, "TERM")
    assert k.wait(pid, 10) == (pid, 7)
    assert out.read_all() == "caught signal 15\n"


def test_kill_cannot_be_caught(k):
    pid = k.spawn("after_kill")
    time.sleep(0.1)
    k.signal(pid, "TERM")  # caught and ignored by this agent
    time.sleep(0.1)
    assert k.state(pid) in ("R", "S")
    k.signal(pid, "KILL")
    assert k.wait(pid, 5) == (pid, 137)


def test_limits_end_with_152_and_a_message(k):
    err = Pipe()
    pid = k.spawn("talker", ["300"], stdout=Pipe(), stderr=err, limits=Limits(max_tokens=20))
    assert k.wait(pid, 90) == (pid, 152)
    assert err.read_all().strip() == f"aiosh: talker[{pid}]: token limit (20) exceeded"
    err = Pipe()
    pid = k.spawn("sleep", ["10"], stderr=err, limits=Limits(max_time=0.3))
    assert k.wait(pid, 10) == (pid, 152)
    assert "time limit (0.3 s) exceeded" in err.read_all()
    err = Pipe()
    pid = k.spawn("talker", ["300"], stdout=Pipe(), stderr=err, limits=Limits(max_kv=40))
    assert k.wait(pid, 90) == (pid, 152)
    assert "KV limit (40) exceeded" in err.read_all()


def test_parent_children_and_reparenting(k):
    out = Pipe()
    pid = k.spawn("parent", ["3", "0.2", "wait"], stdout=out)
    assert k.wait(pid, 10) == (pid, 0)
    kids = [int(x) for x in out.read_all().split()]
    assert len(kids) == 3
    # children of an exiting parent are reparented to pid 0 (and collected by "init" when they end)
    out = Pipe()
    pid = k.spawn("parent", ["2", "1.0", "leave"], stdout=out)
    first = out.read()
    while not first.strip():
        first += out.read()
    kids = [int(x) for x in first.split()]
    for c in kids:
        assert k.proc(c).ppid == pid
        assert k.proc(c).pgid == k.proc(pid).pgid  # same job
    assert k.wait(pid, 10) == (pid, 0)
    for c in kids:
        assert k.proc(c).ppid == 0
    deadline = time.monotonic() + 10
    while any(c in {p.pid for p in k.ps()} for c in kids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(c in {p.pid for p in k.ps()} for c in kids)


def test_die_with_parent(k):
    out = Pipe()
    pid = k.spawn("parent", ["2", "30", "die-with"], stdout=out)
    kids = [int(x) for x in out.read().split()] or [int(x) for x in out.read().split()]
    assert k.wait(pid, 10) == (pid, 0)
    deadline = time.monotonic() + 5
    while any(c in {p.pid for p in k.ps()} for c in kids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(c in {p.pid for p in k.ps()} for c in kids)


def test_process_group_kill(k):
    leader = k.spawn("sleep", ["30"])
    members = [k.spawn("sleep", ["30"], pgid=leader) for _ in range(3)]
    outsider = k.spawn("sleep", ["30"])
    assert sorted(k.signal(-leader, "TERM")) == sorted([leader, *members])
    for pid in (leader, *members):
        assert k.wait(pid, 10) == (pid, 143)
    assert k.state(outsider) == "S"
    k.signal(outsider, "KILL")
    assert k.wait(outsider, 10) == (outsider, 137)


def test_wait_any_child(k):
    a = k.spawn("sleep", ["0.3"])
    b = k.spawn("sleep", ["0.05"])
    assert k.wait(None, 10) == (b, 0)
    assert k.wait(None, 10) == (a, 0)


def test_syscall_records_have_timings(k):
    pid = k.spawn("talker", ["8"], stdout=Pipe())
    deadline = time.monotonic() + 30
    while k.state(pid) != "Z" and time.monotonic() < deadline:
        time.sleep(0.02)
    calls = [c for c in k.syscalls(pid) if c.kind == "llm"]
    assert len(calls) == 1
    c = calls[0]
    assert c.tokens_out == 8 and c.tokens_in > 0 and c.outcome == "ok"
    assert c.t_queued <= c.t_started <= c.t_first <= c.t_finished
    assert c.turnaround >= c.waiting_time >= 0
    info = k.proc(pid)
    assert info.tokens_out == 8 and info.syscalls >= 1 and info.decode_s > 0
    k.wait(pid, 5)


def test_watchdog_names_an_agent_that_blocks_the_loop(k):
    err = Pipe()
    pid = k.spawn("blocker", ["0.8"], stderr=err)
    assert k.wait(pid, 10) == (pid, 0)
    assert any(f"blocker[{pid}]" in line for line in k.watchdog_events)
    assert f"blocker[{pid}] blocks the kernel loop" in err.read_all()


def test_renice_and_snapshot(k):
    pid = k.spawn("sleep", ["30"])
    assert wait_state(k, pid, "S") == "S"  # in its timer, not just started
    assert k.renice(pid, 5) == 5
    assert k.renice(pid, 99) == 19  # clamped, as renice does
    snap = k.snapshot()
    mine = [p for p in snap.procs if p.pid == pid][0]
    assert mine.nice == 19 and mine.state == "S" and mine.wchan == "timer"
    assert snap.model.n_ctx_train == 8192 and snap.engine.kv_capacity >= 8192
    k.signal(pid, "KILL")
    k.wait(pid, 5)
    with pytest.raises(NoSuchProcess):
        k.renice(pid, 1)


@pytest.mark.timeout(300)
def test_stress_100_agents_no_leaks(k):
    """100 agents (mostly short) on 2 cores all finish; slots and KV accounting return to zero."""
    pids = []
    for i in range(100):
        if i % 10 == 0:
            pids.append(k.spawn("talker", ["6"], stdout=Pipe()))
        elif i % 3 == 0:
            pids.append(k.spawn("chat", [f"Say the number {i}."], stdout=Pipe(), options={"max_tokens": 4}))
        else:
            pids.append(k.spawn("sleep", ["0.01"]))
    statuses = [k.wait(pid, 240) for pid in pids]
    assert all(s is not None and s[1] == 0 for s in statuses), statuses
    deadline = time.monotonic() + 5
    while k.local.stats.slots_busy and time.monotonic() < deadline:
        time.sleep(0.05)
    st = k.local.stats
    assert st.slots_busy == 0 and not st.seqs
    assert st.kv_used == st.kv_cached_idle  # only idle caches remain
    k.local.clear_idle_caches()
    assert k.local.stats.kv_used == 0
    assert not [p for p in k.ps() if p.pid in pids]
