"""The monitor against a real Kernel with real agents (Pilot): kill, renice, stop/continue, sort, filter, and
acting on an agent that has just exited. One kernel for the module; every test collects its own agents."""

from __future__ import annotations

import asyncio
import functools
import time

import pytest
from aiosh.kernel import Kernel
from aiosh.kernel.config import load_config
from aiosh.kernel.streams import Pipe

from aiosh.monitor import MonitorApp
from aiosh.monitor.modals import NiceModal, SignalModal

pytestmark = [pytest.mark.model, pytest.mark.timeout(90)]

SIZE = (140, 45)


@pytest.fixture(scope="module")
def k(tmp_path_factory, kernel_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg")))
    cfg = load_config(cwd=tmp_path_factory.mktemp("cwd"), overrides={"kernel": {"slots": 4, "kv_cells": 8192}})
    kern = kernel_factory(cfg)
    yield kern
    kern.shutdown()
    mp.undo()


def sync(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))

    return wrapper


async def until(pilot, cond, timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except (AttributeError, KeyError, LookupError):
            pass
        await pilot.pause(0.02)
    raise AssertionError(f"timed out waiting for {what or cond}")


def select(app: MonitorApp, pid: int) -> None:
    app.table.move_cursor(row=app.table.get_row_index(str(pid)), animate=False)
    assert app.table.selected_pid == pid


def cell(app: MonitorApp, pid: int, column: str) -> str:
    return app.table.get_cell(str(pid), column).plain


def reap(k: Kernel, *pids: int) -> None:
    for pid in pids:
        try:
            k.signal(pid, 9)
        except LookupError:
            continue
        k.wait(pid, 10)


@sync
async def test_kill_from_the_pane_ends_with_143_and_shows_z(k):
    pid = k.spawn("sleep", ["30"])
    app = MonitorApp(k, interval=0.1)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: pid in app.table.shown_pids, what="the agent's row")
        select(app, pid)
        await pilot.press("k")
        await until(pilot, lambda: isinstance(app.screen, SignalModal), what="the signal modal")
        await pilot.press("enter")  # TERM, the default
        await until(pilot, lambda: app.data.agent(pid).state == "Z", what="Z in the table")
        assert cell(app, pid, "stat") == "Z" and "exited 143" in cell(app, pid, "cmd")
        assert any(f"sent TERM to {pid}" in n for n in app.notices)
    assert k.wait(pid, 10) == (pid, 143)


@sync
async def test_renice_and_stop_continue_from_the_pane(k):
    pid = k.spawn("sleep", ["30"])
    app = MonitorApp(k, interval=0.1)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: pid in app.table.shown_pids, what="the agent's row")
        select(app, pid)
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, NiceModal), what="the nice modal")
        await pilot.press("7", "enter")
        await until(pilot, lambda: cell(app, pid, "ni") == "7", what="NI 7 in the table")
        assert k.proc(pid).nice == 7 and cell(app, pid, "stat").endswith("N")
        await pilot.press("s")
        await until(pilot, lambda: cell(app, pid, "stat").startswith("T"), what="T in the table")
        assert k.proc(pid).state == "T"
        await pilot.press("s")
        await until(pilot, lambda: not cell(app, pid, "stat").startswith("T"), what="continued")
        assert k.proc(pid).state != "T"
    reap(k, pid)


@sync
async def test_sort_filter_and_a_chat_agent_on_the_timeline(k):
    a = k.spawn("sleep", ["30"], nice=5)
    b = k.spawn("sleep", ["30"], nice=-3)
    stdin = Pipe()  # chat reads its stdin first: it waits "on user" while the keys are tested, then decodes
    chat = k.spawn("chat", ["Tell a story"], stdin=stdin, stdout=Pipe(), options={"max_tokens": 200})
    app = MonitorApp(k, interval=0.2)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: {a, b, chat} <= set(app.table.shown_pids), what="three rows")
            await until(pilot, lambda: chat in _queue(app, "user"), what="chat waiting on its stdin")
            assert {a, b} <= set(_queue(app, "timer"))
            assert app.table.shown_pids.index(a) < app.table.shown_pids.index(b)  # by pid at first
            await pilot.press("N")  # by nice, lowest first
            shown = app.table.shown_pids
            assert shown.index(b) < shown.index(chat) < shown.index(a)
            assert app.table.ordered_columns[3].label.plain == "NI▲"
            await pilot.press("N")  # again: reversed
            shown = app.table.shown_pids
            assert shown.index(a) < shown.index(chat) < shown.index(b)
            await pilot.press("slash", *"chat", "enter")
            assert app.table.shown_pids == [chat]
            await pilot.press("slash", "escape")
            assert {a, b, chat} <= set(app.table.shown_pids)
            # now the chat agent decodes: it shows on the timeline and its tokens grow
            stdin.close()
            await until(pilot, lambda: chat in app.data.timeline.pids, timeout=30, what="chat on the timeline")
            await until(pilot, lambda: app.data.agent(chat).tokens_out > 0 or app.data.agent(chat).state == "Z",
                        timeout=30, what="chat's tokens")
            assert app.data.throughput.generated_tokens > 0 and app.data.memory.kv_capacity == 8192
    finally:
        reap(k, a, b, chat)


def _queue(app: MonitorApp, key: str) -> tuple[int, ...]:
    return next(q.pids for q in app.data.scheduler.queues if q.key == key)


@sync
async def test_acting_on_an_exited_agent_notifies(k):
    gone = k.spawn("sleep", ["30"])
    quick = k.spawn("sleep", ["0.05"])
    app = MonitorApp(k, interval=0.1)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: gone in app.table.shown_pids, what="the agent's row")
        await until(pilot, lambda: app.data.agent(quick).state == "Z", what="the quick one as Z")
        # a zombie: signals are ignored, the pane says it has exited
        select(app, quick)
        await pilot.press("s")
        assert f"{quick} (sleep) has exited with status 0" in app.notices[-1]
        # collected behind the pane's back: NoSuchProcess becomes a notice
        await pilot.press("p")  # paused: the row stays although the process is gone
        k.signal(gone, 9)
        assert k.wait(gone, 10) == (gone, 137)
        select(app, gone)
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, NiceModal), what="the nice modal")
        await pilot.press("1", "enter")
        await until(pilot, lambda: "has exited and been collected" in app.notices[-1], what="a notice")
        await pilot.press("k")
        await until(pilot, lambda: isinstance(app.screen, SignalModal), what="the signal modal")
        await pilot.press("enter")
        assert f"{gone} has exited and been collected" in app.notices[-1]
        assert app.is_running
    assert k.wait(quick, 10) == (quick, 0)
