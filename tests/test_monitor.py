"""The monitor without the model: the collector's arithmetic, the table's view logic, Pilot tests and layout
snapshots on a scripted `FakeKernel` (fixed times, pids and steps, so every picture is deterministic).

`AIOSH_WRITE_DOCS=1 pytest tests/test_monitor.py -k docs` rewrites docs/monitor.svg from the same state.
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
from dataclasses import replace
from pathlib import Path

import pytest
from aiosh.kernel.backend import BackendStats
from aiosh.kernel.engine import EngineStats, SeqStats, StepRecord
from aiosh.kernel.kernel import KernelSnapshot
from aiosh.kernel.model import ModelInfo
from aiosh.kernel.proc import Limits, ProcInfo, SyscallRecord

from aiosh.monitor import MonitorApp
from aiosh.monitor.agents_table import COLUMNS, arrange
from aiosh.monitor.collector import Collector

pytestmark = pytest.mark.timeout(60)


def sync(fn):
    """Run an async test with asyncio.run (no asyncio plugin needed)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))

    return wrapper

SIZE = (140, 45)
T0 = 1_750_000_000.0  # wall clock of the first snapshot
DT = 2.5  # seconds between scripted snapshots
N_SNAPS = 25  # a minute of history
BPT = 23040  # KV bytes per token of the embedded model
MODEL = ModelInfo(
    path="/models/SmolLM2-135M-Instruct.Q4_1.gguf", description="llama 256M Q4_1", n_ctx_train=8192, n_vocab=49152,
    n_layer=30, n_params=134_515_008, size_bytes=96_576_768, kv_bytes_per_token=BPT,
)
POLICY = {
    "policy": "rr", "description": "round robin: each runnable sequence gets `quantum` tokens in turn when the "
    "batch is full", "preemptive": True, "params": {"quantum": 16},
}

# pid, ppid, agent, argv, state, wchan, nice, class, created (s before T0), kv tokens, swapped bytes, seq state
AGENTS = [
    (1, 0, "react", ("Plan a weekend in Lisbon",), "S", "child", 0, "interactive", 95, 0, 0, None),
    (2, 1, "map", ("summarize", "notes/*.md"), "S", "child", 0, "normal", 80, 0, 0, None),
    (3, 2, "summarize", ("notes/day1.md",), "R", "", 0, "normal", 60, 1260, 0, "decode"),
    (4, 2, "summarize", ("notes/day2.md",), "R", "", 0, "normal", 58, 1105, 0, "decode"),
    (5, 0, "chat", ("Explain", "KV", "caches"), "R", "", -5, "interactive", 40, 712, 0, "decode"),
    (6, 0, "chat", ("Tell a long story",), "T", "", 0, "normal", 70, 0, 11_796_480, "swapped"),
    (7, 0, "chat", ("Write a haiku about rain",), "S", "slot", 10, "batch", 20, 0, 0, "waiting"),
    (8, 0, "sleep", ("30",), "S", "timer", 0, "batch", 12, 0, 0, None),
    (9, 1, "calc", ("2**32",), "S", "tool", 0, "normal", 6, 0, 0, None),
    (10, 0, "chat", ("Say hello",), "Z", "", 0, "normal", 30, 0, 0, None),
    (11, 0, "chat", ("--system", "You are terse.", "Define entropy"), "R", "", 0, "normal", 2, 388, 0, "prefill"),
]
RATE = {3: 9.0, 4: 9.0, 5: 14.0, 6: 0.0, 7: 0.0, 11: 0.0}  # generated tok/s each, on average
PROMPT = {1: 310, 2: 250, 3: 980, 4: 870, 5: 420, 6: 1530, 7: 40, 10: 25, 11: 384}


def _wave(i: int) -> float:
    return 1.0 + 0.35 * math.sin(i / 2.2) + 0.15 * math.cos(i / 0.9)


def _steps(i: int, t: float) -> tuple[StepRecord, ...]:
    """The last 400 engine steps: 5 (nice -5) nearly always decodes, 3 and 4 take turns with 6 and 7 by
    quanta of 16 (round robin over a full batch), 6 is swapped out 150 steps ago, 11 prefills at the end."""
    base = 2000 + 75 * i
    out = []
    for k in range(400):
        step = base + k
        decoded = []
        if k % 7 != 3:
            decoded.append((5, 500))
        turn = (step // 16) % 3
        if turn == 0:
            decoded += [(3, 300), (4, 400)]
        elif turn == 1:
            decoded += [(3, 300), (6, 600)] if k < 250 else [(3, 300), (7, 700)]
        else:
            decoded += [(4, 400), (7, 700)] if k >= 250 or k % 2 else [(4, 400), (6, 600)]
        prefilled = [(11, 1100, 64)] if k >= 394 else []
        if 100 <= k < 104:
            prefilled.append((7, 700, 40))
        out.append(StepRecord(
            step=step, t=1000.0 + t - T0 - (400 - k) * 0.03, duration=0.028, decoded=tuple(decoded),
            prefilled=tuple(prefilled), n_tokens=len(decoded) + sum(n for *_, n in prefilled),
        ))
    return tuple(out)


def fake_snapshot(i: int) -> KernelSnapshot:
    """The i-th scripted snapshot (0 … N_SNAPS-1); the state is the same, the counters grow."""
    t = T0 + i * DT
    elapsed_total = 95 + i * DT
    procs = []
    gen_total = 0
    prompt_total = 0
    for pid, ppid, agent, argv, state, wchan, nice, klass, age, kv, swapped, _seq in AGENTS:
        lived = age + i * DT
        rate = RATE.get(pid, 0.0)
        out = int(rate * age * 0.8 + sum(rate * DT * _wave(j + pid) for j in range(1, i + 1)))
        out += 40 if pid in (6, 10) else 0
        tin = PROMPT.get(pid, 0)
        gen_total += out
        prompt_total += tin
        procs.append(ProcInfo(
            pid=pid, ppid=ppid, pgid=1 if pid in (1, 2, 3, 4, 9) else pid, agent=agent, argv=argv, state=state,
            wchan=wchan, nice=nice, sched_class=klass, pri=20 + nice, boosted=False, created=t - lived,
            started=t - lived + 0.01, ended=(t - 3.0) if state == "Z" else 0.0, decode_s=(out + tin * 0.1) * 0.012,
            tokens_in=tin, tokens_out=out, kv_tokens=kv, kv_bytes=kv * BPT, swapped_bytes=swapped,
            switches=pid % 4, syscalls=3 + pid, status=0 if state == "Z" else None, limits=Limits(),
            recent_output="Once upon a time" if agent == "chat" else "",
        ))
    seqs = tuple(
        SeqStats(rid=pid * 100, owner=pid, state=seq, slot=None if seq in ("waiting", "swapped") else pid % 4,
                 kv_tokens=kv, kv_bytes=kv * BPT, swapped_bytes=swapped, prompt_tokens=PROMPT.get(pid, 0),
                 generated=0, switches=pid % 3, boosted=False, service=0.0)
        for pid, _pp, _a, _v, _s, _w, _n, _c, _age, kv, swapped, seq in AGENTS if seq
    )
    kv_used = sum(a[9] for a in AGENTS) + 420
    engine = EngineStats(
        kv_capacity=8192, kv_used=kv_used, kv_cached_idle=420, kv_bytes_per_token=BPT, swapped_bytes=11_796_480,
        steps=2400 + 75 * i, prompt_tokens=prompt_total + int(sum(60 * DT * _wave(3 * j) for j in range(i + 1))), generated_tokens=gen_total,
        cached_tokens=1650, preemptions=30 + 3 * i, swaps_out=14 + i // 2, swaps_in=13 + i // 2,
        recomputes=1, last_batch=4, slots=4, slots_busy=4, policy="rr", seqs=seqs, t=1000.0 + i * DT,
    )
    return KernelSnapshot(
        t=t, uptime=elapsed_total + 3600 + 754, procs=tuple(procs), engine=engine, steps=_steps(i, t),
        policy=POLICY, model=MODEL, n_threads=2, n_gpu_layers=0,
        backends=(BackendStats(
            name="local", kind="local", pool="local", model=MODEL.description, url=MODEL.path, healthy=True,
            queued=1, in_flight=4, max_concurrent=4, requests=40 + 2 * i, errors=0, retries=0, ttft_s=0.182,
            tokens_per_s=32.0 + i % 3,
        ),),
    )


class FakeKernel:
    """The part of Kernel the monitor uses, replaying scripted snapshots (the last one forever)."""

    def __init__(self, n: int = N_SNAPS) -> None:
        self.snaps = [fake_snapshot(i) for i in range(n)]
        self.i = 0
        self.sent: list[tuple[int, int]] = []
        self.niced: list[tuple[int, int]] = []
        self.gone: set[int] = set()  # pids to report as collected (NoSuchProcess)

    @property
    def done(self) -> bool:
        return self.i >= len(self.snaps)

    def snapshot(self, steps: int = 200) -> KernelSnapshot:
        snap = self.snaps[min(self.i, len(self.snaps) - 1)]
        self.i += 1
        return snap

    def _live(self, pid: int) -> ProcInfo:
        if pid in self.gone:
            raise LookupError(f"({pid}) - No such process")
        for p in self.snaps[-1].procs:
            if p.pid == pid:
                return p
        raise LookupError(f"({pid}) - No such process")

    def signal(self, pid: int, num: int = 15) -> list[int]:
        p = self._live(pid)
        if p.state == "Z":
            return []
        self.sent.append((pid, num))
        return [pid]

    def renice(self, pid: int, nice: int) -> int:
        p = self._live(pid)
        if p.state == "Z":
            raise LookupError(f"({pid}) - No such process")
        self.niced.append((pid, nice))
        return nice

    def syscalls(self, pid: int) -> list[SyscallRecord]:
        self._live(pid)
        return [SyscallRecord(id=pid * 10 + k, pid=pid, kind="llm", detail=f"call {k}", t_queued=T0 + k,
                              t_started=T0 + k + 0.1, t_finished=T0 + k + 1.0, tokens_in=30, tokens_out=12,
                              outcome="ok") for k in range(3)]


def fixed_app(n: int = N_SNAPS) -> tuple[MonitorApp, FakeKernel]:
    fake = FakeKernel(n)
    app = MonitorApp(fake, interval=0.01)
    app.collector.rss_reader = lambda: 612 * 1024 * 1024
    return app, fake


async def settle(pilot, fake: FakeKernel) -> None:
    """Wait until every scripted snapshot has been collected and rendered (the picture is then fixed)."""
    app = pilot.app
    for _ in range(2000):
        if fake.done and app.data is not None and app.data.seq >= len(fake.snaps) and not app._in_flight:
            break
        await pilot.pause(0.01)
    await pilot.pause()


# --- the collector ------------------------------------------------------------------------------------------------


def test_collector_rates_shares_and_queues():
    fake = FakeKernel(3)
    c = Collector(fake, rss_reader=lambda: 1)
    first = c.collect()
    assert first.seq == 1 and all(a.tok_pct == 0 for a in first.agents)  # no interval yet
    second = c.collect()
    s0, s1 = fake.snaps[0], fake.snaps[1]
    assert second.throughput.gen_tok_s == pytest.approx(
        (s1.engine.generated_tokens - s0.engine.generated_tokens) / DT)
    assert second.scheduler.steps_per_s == pytest.approx(75 / DT)
    assert second.scheduler.switches_per_s == pytest.approx((s1.engine.preemptions - s0.engine.preemptions) / DT)
    assert sum(a.tok_pct for a in second.agents) == pytest.approx(100.0)
    row5 = second.agent(5)
    d_out = s1.procs[4].tokens_out - s0.procs[4].tokens_out
    assert row5.tok_s == pytest.approx(d_out / DT) and row5.stat == "R<"
    assert second.agent(7).stat == "SN" and second.agent(10).state == "Z"
    q = {x.key: x.pids for x in second.scheduler.queues}
    assert q["decode"] == (3, 4, 5) and q["prefill"] == (11,) and q["ready"] == (7,)
    # 6 is stopped with its KV swapped out: listed under "stopped" only
    assert q["swapped"] == () and q["stopped"] == (6,) and q["child"] == (1, 2) and q["tool"] == (9,)
    assert q["timer"] == (8,) and q["zombie"] == (10,) and q["work"] == ()
    listed = [pid for x in second.scheduler.queues for pid in x.pids]
    assert len(listed) == len(set(listed)) == 11  # every agent in exactly one queue
    assert second.header.n_running == len(q["decode"]) + len(q["prefill"]) + len(q["work"]) == 4
    assert second.header.n_stopped == len(q["stopped"]) == 1
    assert second.timeline.pids == (3, 4, 5, 6, 7, 11)
    assert second.memory.agents[0].pid == 3 and second.memory.short_term is None
    third = c.collect()
    again = c.collect()  # the script is exhausted: the same snapshot, no time passed, the same picture
    assert again.throughput == third.throughput and again.agents == third.agents


def test_collector_memory_hook_and_detail():
    fake = FakeKernel(2)
    c = Collector(fake, rss_reader=lambda: 1, memory_hook=lambda snap: {3: 4096, 5: 1024})
    data = c.collect(detail_pid=5)
    assert data.memory.short_term == ((3, 4096), (5, 1024))
    assert data.detail.pid == 5 and data.detail.info.agent == "chat" and len(data.detail.syscalls) == 3
    fake.gone.add(5)
    assert c.collect(detail_pid=5).detail.syscalls == ()


def test_arrange_sort_filter_tree():
    rows = Collector(FakeKernel(2), rss_reader=lambda: 1).collect().agents
    assert [r.pid for r, _ in arrange(rows)] == list(range(1, 12))
    assert [r.pid for r, _ in arrange(rows, "pid", reverse=True)][:3] == [11, 10, 9]
    by_kv = [r.pid for r, _ in arrange(rows, "kv", reverse=True)]
    assert by_kv[:3] == [3, 4, 5]
    assert [r.pid for r, _ in arrange(rows, filter_text="SUMM")] == [2, 3, 4]
    assert [r.pid for r, _ in arrange(rows, filter_text="7")] == [7]
    tree = arrange(rows, tree=True)
    assert [(r.pid, p) for r, p in tree][:5] == [(1, ""), (2, "├─ "), (3, "│  ├─ "), (4, "│  └─ "), (9, "└─ ")]
    # a filtered-out parent makes its children roots
    assert [(r.pid, p) for r, p in arrange(rows, filter_text="notes/day", tree=True)] == [(3, ""), (4, "")]


# --- Pilot on the fake kernel -------------------------------------------------------------------------------------


@sync
async def test_keys_on_fake_kernel():
    app, fake = fixed_app(4)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, fake)
        table = app.table
        assert table.shown_pids == list(range(1, 12))
        await pilot.press("down", "down", "down", "down")  # pid 5
        assert table.selected_pid == 5
        await pilot.press("C")  # %TOK, largest first
        assert table.sort_key == "tok_pct" and table.reverse
        assert table.selected_pid == 5  # the cursor follows its agent
        pcts = [app.data.agent(pid).tok_pct for pid in table.shown_pids]
        assert pcts == sorted(pcts, reverse=True) and pcts[0] > 0
        await pilot.press("C")
        assert not table.reverse
        # the mouse: a header click sorts by that column, a row click moves the cursor to that agent
        shown = app.table.shown_columns
        x = 1 + sum((c.width or 0) + 2 for c in shown[: [c.key for c in shown].index("tok_pct")]) + 2
        await pilot.click("#agents", offset=(x, 1))  # the %TOK header (after the border and the columns before)
        assert table.sort_key == "tok_pct" and table.reverse  # the same column again: reversed
        await pilot.click("#agents", offset=(20, 1 + 1 + table.shown_pids.index(3)))
        assert table.selected_pid == 3
        await pilot.press("P")
        await pilot.press("slash", "c", "h", "a", "t", "enter")
        assert table.shown_pids == [5, 6, 7, 10, 11]
        await pilot.press("slash", "escape")
        assert len(table.shown_pids) == 11
        await pilot.press("t")
        assert table.tree_view and table.shown_pids[:4] == [1, 2, 3, 4]
        await pilot.press("t")
        # kill: the modal offers TERM first
        table.move_cursor(row=table.get_row_index("5"))
        await pilot.press("k")
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        assert fake.sent[-1] == (5, 15)
        # stop / continue: 6 is stopped, so s continues it
        table.move_cursor(row=table.get_row_index("6"))
        await pilot.press("s")
        assert fake.sent[-1] == (6, 18)
        table.move_cursor(row=table.get_row_index("7"))
        await pilot.press("s")
        assert fake.sent[-1] == (7, 19)
        await pilot.press("n")
        await pilot.pause()
        await pilot.press("minus", "3", "enter")
        await pilot.pause()
        assert fake.niced[-1] == (7, -3)
        # the zombie and a collected process: a notice, no exception
        table.move_cursor(row=table.get_row_index("10"))
        await pilot.press("k")
        assert "10 (chat) has exited with status 0" in app.notices[-1]
        fake.gone.add(8)
        table.move_cursor(row=table.get_row_index("8"))
        await pilot.press("n")
        await pilot.pause()
        await pilot.press("1", "enter")
        await pilot.pause()
        assert "8 has exited and been collected" in app.notices[-1]
        await pilot.press("s")
        assert "8 has exited" in app.notices[-1]
        # pause, interval
        await pilot.press("p")
        assert app.paused
        await pilot.press("plus")
        assert app.interval == 0.1
        await pilot.press("p")
        assert not app.paused
        await pilot.press("question_mark")
        await pilot.pause()
        assert type(app.screen).__name__ == "HelpScreen"
        await pilot.press("k")  # no kill modal on top of the help
        assert type(app.screen).__name__ == "HelpScreen"
        await pilot.press("escape")
        # Enter: the detail screen, fed by the collector
        table.move_cursor(row=table.get_row_index("5"))
        await pilot.press("enter")
        for _ in range(200):
            if app.data is not None and app.data.detail is not None:
                break
            await pilot.pause(0.02)
        assert type(app.screen).__name__ == "AgentScreen" and app.screen.pid == 5
        assert app.data.detail.pid == 5 and len(app.data.detail.syscalls) == 3
        await pilot.press("q")  # back, not quit
        await pilot.pause()
        assert app.screen is app.screen_stack[0]
        await pilot.press("q")
    assert app.return_code == 0


@sync
async def test_cursor_stays_on_its_agent_when_rows_come_and_go():
    fake = FakeKernel(2)
    base = fake.snaps[-1]
    later = [replace(base, t=base.t + DT * (n + 1), procs=procs) for n, procs in enumerate((
        tuple(p for p in base.procs if p.pid not in (1, 2)),  # two rows above the cursor are collected
        tuple(p for p in base.procs if p.pid not in (1, 2)) + (replace(base.procs[0], pid=12, agent="new"),),
    ))]
    fake.snaps.append(later[0])
    app = MonitorApp(fake, interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await until_true(pilot, lambda: fake.i >= 3)
        await until_true(pilot, lambda: 5 in app.table.shown_pids)
        select = app.table.get_row_index("5")
        app.table.move_cursor(row=select)
        fake.snaps.append(later[1])  # the next refresh removes 1 and 2 (above the cursor) and adds 12
        await until_true(pilot, lambda: 12 in app.table.shown_pids)
        assert 1 not in app.table.shown_pids and app.table.selected_pid == 5


async def until_true(pilot, cond, tries: int = 500) -> None:
    for _ in range(tries):
        if cond():
            return
        await pilot.pause(0.01)
    raise AssertionError("condition never held")


@sync
async def test_detail_screen_shows_output_and_syscalls():
    app, fake = fixed_app(3)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, fake)
        app.table.move_cursor(row=app.table.get_row_index("6"))
        await pilot.press("enter")
        await until_true(pilot, lambda: getattr(app.screen, "detail", None) is not None)
        screen = app.screen
        assert "Once upon a time" in str(screen.query_one("#output").render())
        assert screen.query_one("#calls").row_count == 3
        assert "state T" in str(screen.query_one("#about").render())
        await pilot.press("s")  # acts on the agent on screen: 6 is stopped, so CONT
        assert fake.sent[-1] == (6, 18)
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is app.screen_stack[0]


@sync
async def test_scrolling_draws_the_rows_under_the_viewport():
    fake = FakeKernel(1)
    sleeper = fake.snaps[0].procs[7]
    many = tuple(replace(sleeper, pid=100 + n, argv=(f"{n}",)) for n in range(40))
    fake.snaps = [replace(fake.snaps[0], procs=many)]
    app = MonitorApp(fake, interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await until_true(pilot, lambda: len(app.table.shown_pids) == 40)
        await pilot.press("end")
        await pilot.pause()
        table = app.table
        assert table.selected_pid == 139 and table.scroll_offset.y > 0
        lines = [table.render_line(y).text for y in range(table.size.height)]
        assert lines[0].split()[0] == "PID▲"  # the header stays on top
        assert any(line.split()[:1] == ["139"] for line in lines[1:])
        assert not any(line.split()[:1] == ["100"] for line in lines[1:])  # scrolled out of view


def test_run_monitor_runs_the_app_and_puts_signal_handlers_back(monkeypatch):
    import signal

    from aiosh import monitor

    seen = {}

    def fake_run(self):
        seen["app"] = self
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a driver might

    before = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(monitor.MonitorApp, "run", fake_run)
    monitor.run_monitor(FakeKernel(1), interval=2.0)
    assert seen["app"].interval == 2.0 and seen["app"].log_source is None
    assert signal.getsignal(signal.SIGINT) is before


@sync
async def test_refreshes_never_overlap():
    """A slow collection delays the next one instead of running beside it."""
    import threading
    import time

    class Slow(FakeKernel):
        def __init__(self) -> None:
            super().__init__(3)
            self.running = 0
            self.max_running = 0
            self.lock = threading.Lock()

        def snapshot(self, steps: int = 200) -> KernelSnapshot:
            with self.lock:
                self.running += 1
                self.max_running = max(self.max_running, self.running)
            time.sleep(0.05)
            with self.lock:
                self.running -= 1
            return super().snapshot(steps)

    slow = Slow()
    app = MonitorApp(slow, interval=0.001)
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(100):
            if app.collections >= 5:
                break
            await pilot.pause(0.02)
        assert app.collections >= 5
    assert slow.max_running == 1


@sync
async def test_log_panel_shows_pipe_text():
    from aiosh.kernel.streams import Pipe

    pipe = Pipe("script")
    pipe.write("first line\n")
    app = MonitorApp(FakeKernel(2), log_source=pipe, interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        pipe.write("second line\n")
        pipe.close()
        for _ in range(200):
            if app.log_panel.ended:
                break
            await pilot.pause(0.02)
        assert app.log_panel.ended
        assert [ln for ln in app.log_panel.lines if ln] == ["first line", "second line"]


# --- layout snapshots ---------------------------------------------------------------------------------------------


def test_snapshot_main(snap_compare):
    app, fake = fixed_app()
    assert snap_compare(app, terminal_size=SIZE, run_before=lambda pilot: settle(pilot, fake))


def test_snapshot_sorted_tree_with_log(snap_compare):
    from aiosh.kernel.streams import Pipe

    pipe = Pipe("script")
    pipe.write("$ chat 'Explain KV caches' &\n[1] 5\n$ summarize notes/ | tee summary.md\n")
    fake = FakeKernel()
    app = MonitorApp(fake, log_source=pipe, interval=0.01)
    app.collector.rss_reader = lambda: 612 * 1024 * 1024

    async def before(pilot):
        await settle(pilot, fake)
        await pilot.press("t", "M")
        for _ in range(100):
            if app.log_panel.lines and app.log_panel.lines[0]:
                break
            await pilot.pause(0.02)
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=before)


def test_snapshot_kill_modal(snap_compare):
    app, fake = fixed_app()

    async def before(pilot):
        await settle(pilot, fake)
        await pilot.press("down", "down", "k")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=before)


@sync
async def test_docs_screenshot(tmp_path):
    """The README's picture: docs/monitor.svg (rewritten with AIOSH_WRITE_DOCS=1)."""
    app, fake = fixed_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, fake)
        app.interval = 0.5  # as a user runs it (the replay ran fast)
        app.header_bar.show(None, app.interval, app.paused)
        await pilot.press("down", "down", "down", "down")
        await pilot.pause()
        out = app.save_screenshot("monitor.svg", str(tmp_path))
        if os.environ.get("AIOSH_WRITE_DOCS"):
            docs = Path(__file__).resolve().parents[1] / "docs"
            docs.mkdir(exist_ok=True)
            app.save_screenshot("monitor.svg", str(docs))
    svg = Path(out).read_text(encoding="utf-8")
    assert svg.startswith("<svg") and "Scheduler" in svg and "Timeline" in svg


def test_fake_snapshot_is_deterministic():
    assert fake_snapshot(3) == fake_snapshot(3)
    assert replace(fake_snapshot(3), t=0) != replace(fake_snapshot(4), t=0)


# --- small terminals, htop's keys, the selection, the timeline (issue 15) ----------------------------------------

LAYOUTS = [((80, 24), "small"), ((100, 30), "medium"), ((160, 50), "full")]


def visible_pids(app: MonitorApp) -> list[int]:
    """Pids on the table's rows as drawn on screen now (not scrolled out of view)."""
    table = app.table
    lines = [table.render_line(y).text for y in range(table.size.height)]
    return [int(w[0]) for w in (line.split() for line in lines[1:]) if w and w[0].isdigit()]


@pytest.mark.parametrize(("size", "mode"), LAYOUTS)
@sync
async def test_the_agents_come_first_at_any_size(size, mode):
    """htop's rule: every size shows the agents with their command lines; k acts on a row the user sees."""
    app, fake = fixed_app(3)
    async with app.run_test(size=size) as pilot:
        await settle(pilot, fake)
        assert app.layout_mode == mode
        assert visible_pids(app) == list(range(1, 12))  # all eleven agents on screen
        labels = [c.label for c in app.table.shown_columns]
        assert labels[0] == "PID" and "CMD" in labels and "OUT" in labels and app.table.cmd_width >= 22
        assert app.query_one("#panels").display == (mode == "full")
        assert app.summary.display == (mode != "full")
        assert app.timeline.display == (mode != "small")
        if mode != "full":  # the collapsed panels: one line each
            text = app.summary._last.plain.splitlines()
            assert [line.split()[0] for line in text] == ["Sched", "Mem", "Tput", "Back"] + (
                ["Steps"] if mode == "small" else [])
            assert "stop 6" in text[0] and "dec 3 4 5" in text[0]
        header = app.header_bar._last.plain
        assert "11 agents, 4 running, 1 stopped" in header[: size[0]]
        await pilot.press("down", "down")
        assert app.table.selected_pid == 3 and 3 in visible_pids(app)
        await pilot.press("k")
        await pilot.pause()
        assert type(app.screen).__name__ == "SignalModal" and app.screen.pid == 3


@sync
async def test_resizing_changes_the_layout_and_keeps_the_selection():
    app, fake = fixed_app(3)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(pilot, fake)
        app.table.move_cursor(row=app.table.get_row_index("9"))
        assert app.layout_mode == "full" and len(app.table.shown_columns) == len(COLUMNS)
        await pilot.resize_terminal(80, 24)
        await until_true(pilot, lambda: app.layout_mode == "small")
        await until_true(pilot, lambda: "CLASS" not in [c.label for c in app.table.shown_columns])
        assert app.table.selected_pid == 9 and visible_pids(app) == list(range(1, 12))
        assert app.summary._last.plain.startswith("Sched")  # drawn at once, not at the next refresh
        await pilot.resize_terminal(160, 50)
        await until_true(pilot, lambda: app.layout_mode == "full")
        await until_true(pilot, lambda: len(app.table.shown_columns) == len(COLUMNS))
        assert app.table.selected_pid == 9


@sync
async def test_htop_function_keys():
    app, fake = fixed_app(3)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot, fake)
        table = app.table
        table.move_cursor(row=table.get_row_index("7"))  # nice 10
        await pilot.press("f9")
        await pilot.pause()
        assert type(app.screen).__name__ == "SignalModal" and app.screen.pid == 7
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("f7")
        assert fake.niced[-1] == (7, 9)  # Nice -: one step higher priority
        await pilot.press("f8")
        assert fake.niced[-1] == (7, 11)
        await pilot.press("f6")
        await pilot.pause()
        assert type(app.screen).__name__ == "SortModal"
        from textual.widgets import OptionList

        options = app.screen.query_one(OptionList)
        assert options.highlighted == 0  # PID, the sort in force
        options.highlighted = [c.key for c in COLUMNS].index("out")
        await pilot.press("enter")
        await pilot.pause()
        assert table.sort_key == "out" and table.reverse and table.selected_pid == 7
        await pilot.press("f5")
        assert table.tree_view
        await pilot.press("f4")
        await pilot.pause()
        assert app.filter_bar.has_class("-active")
        await pilot.press("escape")
        await pilot.press("f1")
        await pilot.pause()
        assert type(app.screen).__name__ == "HelpScreen"
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("f10")
        await pilot.pause()
    assert app.return_code == 0


@sync
async def test_selection_follows_its_agent_and_then_a_neighbour():
    fake = FakeKernel(2)
    base = fake.snaps[-1]
    five = next(p for p in base.procs if p.pid == 5)
    exited = replace(five, state="Z", status=0, ended=base.t)
    steps = [
        replace(base, t=base.t + DT, procs=tuple(exited if p.pid == 5 else p for p in base.procs)),
        replace(base, t=base.t + 2 * DT, procs=tuple(p for p in base.procs if p.pid != 5)),
    ]
    app = MonitorApp(fake, interval=0.02)
    async with app.run_test(size=(100, 30)) as pilot:
        await until_true(pilot, lambda: fake.i >= 2 and 5 in app.table.shown_pids)
        app.table.move_cursor(row=app.table.get_row_index("5"))
        fake.snaps.append(steps[0])
        await until_true(pilot, lambda: any("5 (chat) has exited with status 0" in n for n in app.notices))
        assert app.table.selected_pid == 5  # htop: the cursor stays on the pid while it is there
        fake.snaps.append(steps[1])
        await until_true(pilot, lambda: 5 not in app.table.shown_pids)
        assert app.table.selected_pid == 6  # the next row
        await until_true(pilot, lambda: "5 (chat) is gone: selection moved to 6 (chat)" in app.notices[-1])


def test_timeline_keeps_names_and_puts_live_agents_first():
    from aiosh.monitor.timeline import render_timeline

    fake = FakeKernel(2)
    last = fake.snaps[-1]
    # 3 exits and is collected while its steps are still in the timeline's window
    fake.snaps.append(replace(last, t=last.t + DT, procs=tuple(p for p in last.procs if p.pid != 3)))
    c = Collector(fake, rss_reader=lambda: 1)
    c.collect()
    c.collect()
    view = c.collect().timeline
    assert view.pids == (4, 5, 6, 7, 11, 3)  # live first, then the one that has exited
    assert dict(view.labels)[3] == "summarize" and dict(view.states)[3] == "-"
    text = render_timeline(view, 120, max_strips=8).plain
    assert "?" not in text and "    3 summarize x" in text
    short = render_timeline(view, 120, max_strips=3).plain
    strips = [line.split()[0] for line in short.splitlines()[1:]]
    # in this window 6 got no tokens; of 4 5 7 11 and 3, three strips: the busiest live ones, never 3 first
    assert strips == ["4", "5", "7"] and "+2 more (1 live, 1 exited)" in short


@pytest.mark.parametrize(("size", "mode"), LAYOUTS)
def test_snapshot_sizes(snap_compare, size, mode):
    app, fake = fixed_app()
    assert snap_compare(app, terminal_size=size, run_before=lambda pilot: settle(pilot, fake))
