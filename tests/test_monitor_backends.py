"""Backends in the monitor and the observing builtins, without the model or a server: hand-built snapshots with
one local engine and two replicas of a remote pool (one of them down), agents whose KV is unknown (remote), and a
fake kernel for `ps`, `sched` and `free`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiosh.kernel.backend import BackendStats
from aiosh.kernel.engine_client import EngineInfo
from aiosh.kernel.engine_types import EngineSettings, EngineStats
from aiosh.kernel.kernel import KernelSnapshot
from aiosh.kernel.proc import Limits, ProcInfo

from aiosh.commands import observe
from aiosh.monitor import MonitorApp
from aiosh.monitor.agent_detail import describe
from aiosh.monitor.agents_table import COLUMNS, arrange, cells
from aiosh.monitor.backends_panel import fmt_ttft, pool_model, render_backends, title
from aiosh.monitor.collector import AgentDetail, Collector, backend_row
from aiosh.monitor.memory_panel import render_memory
from aiosh.shell import Shell

sys.path.insert(0, str(Path(__file__).parent))
from test_monitor import SIZE, FakeKernel, fake_snapshot, settle  # noqa: E402
from test_shell_fakehost import FakeAgentHost  # noqa: E402

pytestmark = pytest.mark.timeout(60)

LOCAL = BackendStats(
    name="local", kind="local", pool="local", model="llama 256M Q4_1", url="/models/SmolLM2.gguf", healthy=True,
    queued=0, in_flight=1, max_concurrent=4, requests=12, errors=0, retries=0, ttft_s=0.0425, tokens_per_s=31.5,
)
GPU_A = BackendStats(
    name="gpu-a", kind="openai", pool="qwen2.5-7b", model="qwen2.5-7b", url="http://10.0.0.5:8000/v1", healthy=True,
    queued=3, in_flight=4, max_concurrent=4, requests=57, errors=1, retries=2, ttft_s=0.318, tokens_per_s=212.0,
)
GPU_B = BackendStats(
    name="gpu-b", kind="openai", pool="qwen2.5-7b", model="qwen2.5-7b", url="http://10.0.0.6:8000/v1",
    healthy=False, queued=3, in_flight=0, max_concurrent=4, requests=9, errors=5, retries=0, ttft_s=None,
    tokens_per_s=0.0, last_error="connection refused", checked=1234.5,
)
BACKENDS = (LOCAL, GPU_A, GPU_B)


def sync(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))

    return wrapper


def remote_snapshot(i: int) -> KernelSnapshot:
    """test_monitor's scripted snapshot with 5 running on gpu-a, 7 queued for the pool and 10 exited there."""
    snap = fake_snapshot(i)
    where = {5: "gpu-a", 7: "qwen2.5-7b", 10: "gpu-b"}
    procs = tuple(
        replace(p, backend=where[p.pid], kv_tokens=None, kv_bytes=None) if p.pid in where else p for p in snap.procs
    )
    return replace(snap, procs=procs, backends=BACKENDS)


class RemoteFakeKernel(FakeKernel):
    def __init__(self, n: int = 3) -> None:
        super().__init__(n)
        self.snaps = [remote_snapshot(i) for i in range(n)]


def proc(pid: int, *, kv: int | None, backend: str = "local", state: str = "R", cmd: str = "chat") -> ProcInfo:
    return ProcInfo(
        pid=pid, ppid=0, pgid=pid, agent=cmd, argv=("hi",), state=state, wchan="", nice=0, sched_class="normal",
        pri=20, boosted=False, created=100.0, started=100.0, ended=0.0, decode_s=0.5, tokens_in=10, tokens_out=20,
        kv_tokens=kv, kv_bytes=None if kv is None else kv * 1000, swapped_bytes=0, switches=0, syscalls=1,
        status=0 if state == "Z" else None, limits=Limits(), recent_output="", backend=backend,
    )


# --- the collector and the formatting -----------------------------------------------------------------------------


def test_collector_carries_backends_and_unknown_kv():
    data = Collector(RemoteFakeKernel(2), rss_reader=lambda: 1).collect()
    assert [b.name for b in data.backends] == ["local", "gpu-a", "gpu-b"]
    a, b = data.backends[1], data.backends[2]
    assert a.remote and a.healthy and (a.queued, a.in_flight, a.max_concurrent) == (3, 4, 4)
    assert (a.requests, a.errors, a.retries, a.ttft_s, a.tokens_per_s) == (57, 1, 2, 0.318, 212.0)
    assert not b.healthy and b.last_error == "connection refused" and b.ttft_s is None
    assert not data.backends[0].remote
    five = data.agent(5)
    assert five.kv_tokens is None and five.kv_bytes is None and five.backend == "gpu-a"
    assert data.agent(3).backend == "local" and data.agent(3).kv_tokens == 1260
    # memory: local holders by size first, then live remote agents (unknown); the exited remote one is left out
    mem = [(m.pid, m.kv_tokens, m.backend) for m in data.memory.agents]
    assert mem[:4] == [(3, 1260, "local"), (4, 1105, "local"), (11, 388, "local"), (6, 0, "local")]  # 6: swapped
    assert mem[4:] == [(5, None, "gpu-a"), (7, None, "qwen2.5-7b")]


def test_backend_row_from_any_object_with_the_fields():
    row = backend_row(SimpleNamespace(**{**GPU_B.__dict__, "last_error": None}))
    assert row.last_error == "" and row.name == "gpu-b" and not row.healthy


def test_snapshot_without_backends_gives_none():
    data = Collector(FakeKernel(1), rss_reader=lambda: 1).collect()
    assert data.backends[0].name == "local"
    data = Collector(SimpleNamespace(snapshot=lambda steps: replace(fake_snapshot(0), backends=())),
                     rss_reader=lambda: 1).collect()
    assert data.backends == ()
    assert "no backends reported" in render_backends(data.backends).plain


KV = [c.key for c in COLUMNS].index("kv")


def test_agents_table_kv_unknown_is_a_dim_question_mark_and_sorts_last():
    rows = Collector(RemoteFakeKernel(2), rss_reader=lambda: 1).collect().agents
    row5 = next(r for r in rows if r.pid == 5)
    kv = cells(row5)[KV]
    assert kv.plain == "?" and kv.style == "dim"
    assert cells(next(r for r in rows if r.pid == 3))[KV].plain == "1260 27.7M"
    assert cells(next(r for r in rows if r.pid == 1))[KV].plain == "0"
    largest_first = [r.pid for r, _ in arrange(rows, "kv", reverse=True)]
    assert largest_first[:3] == [3, 4, 11] and set(largest_first[-3:]) == {5, 7, 10}
    smallest_first = [r.pid for r, _ in arrange(rows, "kv")]
    assert set(smallest_first[:3]) == {5, 7, 10}


def test_detail_names_the_backend_and_unknown_kv():
    text = describe(AgentDetail(pid=5, info=proc(5, kv=None, backend="gpu-a"), syscalls=()), 5).plain
    assert "backend gpu-a" in text and "KV ? (held by the server)" in text and "KV 0" not in text
    local = describe(AgentDetail(pid=3, info=proc(3, kv=200), syscalls=()), 3).plain
    assert "backend local" in local and "KV 200 (195K)" in local


def test_memory_panel_lists_remote_agents_with_a_question_mark():
    data = Collector(RemoteFakeKernel(2), rss_reader=lambda: 1).collect()
    mem = replace(data.memory, agents=tuple(m for m in data.memory.agents if m.kv_tokens is None))
    text = render_memory(mem, 60).plain
    assert "    5 chat          ? held by gpu-a" in text and "    7 chat          ? held by qwen2.5-7b" in text
    assert "none held" not in text


def test_backend_formatting():
    assert fmt_ttft(None) == "-" and fmt_ttft(0.0425) == "42ms" and fmt_ttft(1.5) == "1.50s"
    rows = [backend_row(b) for b in BACKENDS]
    assert [pool_model(r) for r in rows] == ["llama 256M Q4_1", "qwen2.5-7b", "qwen2.5-7b"]
    assert pool_model(backend_row(replace(GPU_A, pool="chat"))) == "chat/qwen2.5-7b"
    assert title(rows) == "Backends 3 · 2 remote · 1 down" and title(rows[:1]) == "Backends 1"
    text = render_backends(rows, 120)
    lines = text.plain.splitlines()
    assert lines[0].split() == ["NAME", "POOL/MODEL", "HEALTH", "QUEUE", "RUN", "TTFT", "TOK/S", "REQS", "ERRS",
                                "RETRY", "LAST", "ERROR", "/", "URL"]
    assert lines[1].split() == ["local", "llama", "256M", "Q4_1", "ok", "0", "1/4", "42ms", "31.5", "12", "0", "0",
                                "/models/SmolLM2.gguf"]
    assert lines[2].split() == ["gpu-a", "qwen2.5-7b", "ok", "3", "4/4", "318ms", "212", "57", "1", "2",
                                "http://10.0.0.5:8000/v1"]
    assert lines[3].split() == ["gpu-b", "qwen2.5-7b", "DOWN", "3", "0/4", "-", "0", "9", "5", "0",
                                "connection", "refused"]
    styles = {text.plain[s.start:s.end]: str(s.style) for s in text.spans}
    assert styles["ok    "] == "green" and styles["DOWN  "] == "bold red" and styles["connection refused"] == "red"
    # a healthy server that has failed before shows its last error, not as down
    recovered = render_backends([backend_row(replace(GPU_A, last_error="timed out"))]).plain
    assert "last: timed out" in recovered
    many = render_backends([backend_row(replace(GPU_B, name=f"r{n}")) for n in range(9)]).plain
    assert many.splitlines()[-1] == "+3 more (3 down)"


# --- Pilot -------------------------------------------------------------------------------------------------------


@sync
async def test_backends_panel_shows_a_healthy_and_a_down_server():
    fake = RemoteFakeKernel(3)
    app = MonitorApp(fake, interval=0.01)
    app.collector.rss_reader = lambda: 612 * 1024 * 1024
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, fake)
        panel = app.backends_panel
        assert panel.border_title == "Backends 3 · 2 remote · 1 down"
        assert panel.size.height == 4 and panel.outer_size.height == 6  # a header and three rows, in a border
        lines = [" ".join(line.split()) for line in panel.render().plain.splitlines()]
        assert lines[2] == "gpu-a qwen2.5-7b ok 3 4/4 318ms 212 57 1 2 http://10.0.0.5:8000/v1"
        assert lines[3] == "gpu-b qwen2.5-7b DOWN 3 0/4 - 0 9 5 0 connection refused"
        assert app.table.get_cell("5", "kv").plain == "?"
        assert app.table.get_cell("3", "kv").plain == "1260 27.7M"
        await pilot.press("M")  # sort by KV, largest first: no crash on unknowns, which go last
        assert app.table.shown_pids[:3] == [3, 4, 11] and set(app.table.shown_pids[-3:]) == {5, 7, 10}
        app.table.move_cursor(row=app.table.get_row_index("5"))
        await pilot.press("enter")
        for _ in range(200):
            if getattr(app.screen, "detail", None) is not None:
                break
            await pilot.pause(0.02)
        about = str(app.screen.query_one("#about").render())
        assert "backend gpu-a" in about and "KV ?" in about


def test_snapshot_remote_backends(snap_compare):
    fake = RemoteFakeKernel(3)
    app = MonitorApp(fake, interval=0.01)
    app.collector.rss_reader = lambda: 612 * 1024 * 1024
    assert snap_compare(app, terminal_size=SIZE, run_before=lambda pilot: settle(pilot, fake))


# --- ps, sched, free ----------------------------------------------------------------------------------------------


class ObserveKernel:
    """What ps/sched/free read of a Kernel."""

    def __init__(self, procs: list[ProcInfo], backends: tuple[BackendStats, ...] = (LOCAL,)) -> None:
        self.procs = procs
        self._stats = backends
        remote = sorted({b.pool for b in backends if b.kind != "local"})
        self.backends = SimpleNamespace(pools=[SimpleNamespace(name=n, model=n) for n in remote],
                                        stats=lambda: self._stats)
        self.local = SimpleNamespace(
            stats=EngineStats(kv_capacity=8192, kv_used=1200, kv_cached_idle=200, kv_bytes_per_token=1000, slots=4,
                              slots_busy=1, preemptions=3, swaps_out=1, swaps_in=1, recomputes=0),
            settings=EngineSettings(n_slots=4, max_batch=8, batch_tokens=512),
            model_info=SimpleNamespace(size_bytes=96 * 2**20))
        self.policy = SimpleNamespace(name="fair", describe=lambda: {"policy": "fair", "description": "fair share"})

    def engine_info(self) -> EngineInfo:
        return EngineInfo(pid=4242, state="ready", restarts=0, rss_bytes=300 * 2**20, extra_buffers="on (test)",
                          log_path="/tmp/engine.log")

    def ps(self) -> list[ProcInfo]:
        return list(self.procs)


PROCS = [proc(1, kv=300), proc(2, kv=None, backend="gpu-a"), proc(3, kv=0, state="Z"), proc(4, kv=900)]


def _column(out: str, name: str) -> list[str]:
    lines = out.splitlines()
    i = lines[0].split().index(name)
    return [ln.split()[i] for ln in lines[1:]]


def test_ps_shows_unknown_kv_as_a_question_mark():
    out = observe.ps(ObserveKernel(PROCS), [])
    assert _column(out, "KV") == ["300", "?", "0", "900"]
    assert "BACKEND" not in out  # a local-only kernel: the columns as before
    assert _column(observe.ps(ObserveKernel(PROCS), ["-o", "pid,kvmb"]), "KVMIB") == ["0.3", "?", "0.0", "0.9"]
    as_json = json.loads(observe.ps(ObserveKernel(PROCS), ["--json"]))
    assert as_json[1]["kv_tokens"] is None and as_json[1]["backend"] == "gpu-a"


@pytest.mark.parametrize(("sort", "pids"), [("kv", [3, 1, 4, 2]), ("-kv", [4, 1, 3, 2]), ("backend", [2, 1, 3, 4])])
def test_ps_sorts_with_unknown_kv_last(sort, pids):
    out = observe.ps(ObserveKernel(PROCS), ["--sort", sort, "-o", "pid"])
    assert [int(x) for x in out.split()[1:]] == pids


def test_ps_backend_column():
    out = observe.ps(ObserveKernel(PROCS), ["-o", "pid,backend,kv"])
    assert out.splitlines() == ["PID BACKEND  KV", "  1 local   300", "  2 gpu-a     ?", "  3 local     0",
                                "  4 local   900"]
    remote = ObserveKernel(PROCS, BACKENDS)
    header = observe.ps(remote, []).splitlines()[0].split()
    assert header[-2:] == ["BACKEND", "CMD"]  # shown by default once the kernel has remote backends
    assert _column(observe.ps(remote, []), "BACKEND") == ["local", "gpu-a", "local", "local"]


def test_ps_backend_through_the_shell(tmp_path):
    out: list[str] = []
    err: list[str] = []
    sh = Shell(agents=FakeAgentHost(), stdout=out.append, stderr=err.append, cwd=str(tmp_path),
               env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)})
    observe.register(sh.builtins, lambda: ObserveKernel(PROCS, BACKENDS))
    assert sh.run_source("ps -o pid,backend -p 2", filename="-c") == 0
    assert "".join(out) == "PID BACKEND\n  2 gpu-a\n"
    assert sh.run_source("ps -o nope", filename="-c") == 2
    assert "backend" in "".join(err)  # the known columns are listed


def test_sched_lists_each_backend():
    local_only = observe.sched(ObserveKernel(PROCS), [])
    assert "backends" not in local_only and local_only.count("\n") == 5
    assert "engine: ready  pid: 4242  restarts: 0  rss: 300.0M" in local_only.splitlines()
    out = observe.sched(ObserveKernel(PROCS, BACKENDS), [])
    lines = out.splitlines()
    assert lines[:5] == local_only.splitlines() and lines[5] == "backends:"
    assert lines[6].split() == ["NAME", "POOL", "HEALTH", "QUEUE", "RUN", "TTFT", "TOK/S", "REQS", "ERRS", "ERROR"]
    assert lines[7].split() == ["local", "local", "ok", "0", "1/4", "42ms", "31.5", "12", "0"]
    assert lines[8].split() == ["gpu-a", "qwen2.5-7b", "ok", "3", "4/4", "318ms", "212.0", "57", "1"]
    assert lines[9].split() == ["gpu-b", "qwen2.5-7b", "DOWN", "3", "0/4", "-", "0.0", "9", "5", "connection",
                                "refused"]
    healthy = observe.sched(ObserveKernel(PROCS, (LOCAL, GPU_A)), [])
    assert "ERROR" not in healthy  # no column for errors nobody has


def test_free_says_remote_kv_is_unknown(monkeypatch):
    monkeypatch.setattr(observe, "_rss_bytes", lambda: 300 * 2**20)
    local_only = observe.free(ObserveKernel(PROCS), [])
    assert "remote" not in local_only and len(local_only.splitlines()) == 7
    assert local_only.splitlines()[6].split() == ["engine", "-", "300.0M", "-", "-"]  # the engine process's RSS
    out = observe.free(ObserveKernel(PROCS, BACKENDS), [])
    assert out.startswith(local_only)
    assert out.splitlines()[7:] == [
        "remote gpu-a (qwen2.5-7b at http://10.0.0.5:8000/v1): KV unknown (held by the server)",
        "remote gpu-b (qwen2.5-7b at http://10.0.0.6:8000/v1): KV unknown (held by the server)",
    ]
