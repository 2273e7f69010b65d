"""Accounting that agrees with itself, on the real model: a process's tokens are the sum of its calls' tokens
(running, finished or cancelled), a cancelled call keeps what was done until the cancel, context switches
survive the end of the call that had them, and ps, the monitor, logs and storage read the same numbers."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from aiosh.kernel import Kernel
from aiosh.kernel import signals as S
from aiosh.kernel.config import load_config
from aiosh.kernel.streams import Pipe

from aiosh.commands.observe import ps
from aiosh.monitor.collector import Collector

pytestmark = [pytest.mark.model, pytest.mark.timeout(120)]

AGENTS = str(Path(__file__).parent / "agents")


def _kernel(tmp_path_factory, kernel_factory, **kernel: object) -> Kernel:
    cfg = load_config(cwd=tmp_path_factory.mktemp("cwd"), overrides={
        "model": {"n_threads": 1},  # one thread: steady steps on a busy 2-core machine (OpenMP spins otherwise)
        "kernel": {"kv_cells": 8192, **kernel}, "plugins": {"paths": [AGENTS]},
        "storage": {"path": str(tmp_path_factory.mktemp("db") / "aiosh.db")},
    })
    return kernel_factory(cfg)


@pytest.fixture(scope="module")
def k(tmp_path_factory, kernel_factory):
    kern = _kernel(tmp_path_factory, kernel_factory, slots=4)
    yield kern
    kern.shutdown()


def until(cond, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what or cond}")


def llm_calls(k: Kernel, pid: int) -> list:
    return [c for c in k.syscalls(pid) if c.kind == "llm"]


def stored_calls(k: Kernel, pid: int) -> list[dict]:
    k.storage.flush()
    return k.storage.query("SELECT * FROM syscalls WHERE run = ? AND pid = ? AND kind = 'llm'", (k.storage.run, pid))


def test_running_call_shows_live_tokens_and_the_process_is_their_sum(k):
    pid = k.spawn("talker", ["400"], stdout=Pipe())
    until(lambda: k.proc(pid).tokens_out >= 20, what="20 tokens")
    call = llm_calls(k, pid)[0]
    info = k.proc(pid)
    # The call in flight is charged step by step: the detail pane's IN/OUT is the process's own count
    # (read a moment apart, so the call may be a step ahead).
    assert call.t_finished == 0 and call.tokens_in > 0 and call.tokens_out >= 20
    assert call.tokens_in == info.tokens_in and abs(call.tokens_out - info.tokens_out) <= 2
    assert call.t_queued <= call.t_started <= call.t_first
    # the monitor's detail pane: its header line (the process) and its syscalls table (the call) agree
    detail = Collector(k, rss_reader=lambda: 1).collect(detail_pid=pid).detail
    (shown,) = [c for c in detail.syscalls if c.kind == "llm"]
    assert shown.tokens_in == detail.info.tokens_in and abs(shown.tokens_out - detail.info.tokens_out) <= 2
    assert shown.tokens_out >= 20
    k.signal(pid, S.SIGKILL)
    k.wait(pid, 10)


def test_cancelled_call_keeps_what_was_done(k):
    pid = k.spawn("talker", ["400"], stdout=Pipe())
    until(lambda: k.proc(pid).tokens_out >= 30, what="30 tokens")
    k.signal(pid, S.SIGTERM)
    until(lambda: k.state(pid) == "Z", 10, "exit")
    time.sleep(0.2)  # the engine ends the cancelled request at its next step
    info = k.proc(pid)
    (call,) = llm_calls(k, pid)
    assert call.outcome == "cancelled"
    assert call.tokens_out >= 30 and call.tokens_in > 0
    assert (call.tokens_in, call.tokens_out) == (info.tokens_in, info.tokens_out)
    assert call.waiting_time < call.turnaround  # it was admitted long before the cancel: wait is not the total
    until(lambda: stored_calls(k, pid) and stored_calls(k, pid)[0]["tokens_out"] == call.tokens_out, 5, "storage")
    row = stored_calls(k, pid)[0]
    assert (row["tokens_in"], row["tokens_out"], row["outcome"]) == (call.tokens_in, call.tokens_out, "cancelled")
    assert row["t_started"] > row["t_queued"] - 1e-6 and row["t_finished"] > row["t_started"]
    assert k.wait(pid, 5) == (pid, 128 + S.SIGTERM)


def test_tokens_mean_one_thing_in_ps_top_and_storage(k):
    pid = k.spawn("talker", ["12"], stdout=Pipe())
    until(lambda: k.state(pid) == "Z", 30, "exit")
    info = k.proc(pid)
    calls = llm_calls(k, pid)
    assert info.tokens_out == sum(c.tokens_out for c in calls) == 12
    assert info.tokens_in == sum(c.tokens_in for c in calls) > 0
    text = ps(k, ["-p", str(pid)])
    header, line = text.splitlines()[:2]
    cols = dict(zip(header.split(), line.split()))
    assert "TOKENS" not in header and cols["IN"] == str(info.tokens_in) and cols["OUT"] == str(info.tokens_out)
    row = Collector(k, rss_reader=lambda: 1).collect().agent(pid)
    assert (row.tokens_in, row.tokens_out) == (info.tokens_in, info.tokens_out)
    until(lambda: k.storage.query("SELECT tokens_in, tokens_out FROM processes WHERE run = ? AND pid = ?",
                                  (k.storage.run, pid)) == [{"tokens_in": info.tokens_in,
                                                             "tokens_out": info.tokens_out}], 5, "stored process")
    assert k.wait(pid, 5) == (pid, 0)


def test_context_switches_are_kept_after_the_call(tmp_path_factory, kernel_factory):
    """One slot, round robin by 4 tokens: the two agents preempt each other; each one's count of switches
    stays after its call (and its process) has ended, in ps and in storage."""
    kern = _kernel(tmp_path_factory, kernel_factory, slots=1)
    try:
        kern.set_policy("rr", quantum=4)
        a = kern.spawn("talker", ["24"], stdout=Pipe())
        b = kern.spawn("talker", ["24"], stdout=Pipe())
        until(lambda: kern.state(a) == "Z" and kern.state(b) == "Z", 60, "both exit")
        time.sleep(0.1)
        infos = {p.pid: p for p in kern.ps()}
        assert infos[a].switches + infos[b].switches >= 2
        text = ps(kern, ["-o", "pid,sw"])
        got = {int(line.split()[0]): int(line.split()[1]) for line in text.splitlines()[1:]}
        assert got[a] == infos[a].switches and got[b] == infos[b].switches
        until(lambda: {r["pid"]: r["switches"] for r in kern.storage.query(
            "SELECT pid, switches FROM processes WHERE run = ?", (kern.storage.run,))}.get(a) == infos[a].switches,
            5, "stored switches")
    finally:
        kern.shutdown()


def test_a_stopped_agent_is_only_under_stopped_and_the_header_counts_the_queues(k):
    pid = k.spawn("talker", ["400"], stdout=Pipe())
    until(lambda: k.proc(pid).tokens_out >= 5, what="decoding")
    k.signal(pid, S.SIGSTOP)
    until(lambda: k.state(pid) == "T", 10, "T")
    c = Collector(k, rss_reader=lambda: 1)
    for data in (c.collect(), c.collect()):
        q = {x.key: x.pids for x in data.scheduler.queues}
        assert q["stopped"] == (pid,)
        assert [key for key, pids in q.items() if pid in pids] == ["stopped"]  # not also under decoding
        assert data.header.n_running == len(q["decode"]) + len(q["prefill"]) + len(q["work"])
        assert data.header.n_stopped == 1
    k.signal(pid, S.SIGKILL)
    assert k.wait(pid, 10) == (pid, 137)
