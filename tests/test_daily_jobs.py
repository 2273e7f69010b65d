"""Daily use, job control through the real kernel: signals applied before `kill` returns, background output in
whole lines, usable pids for every job, notices in order. One kernel for the module (the model loads once)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiosh.kernel import Kernel
from aiosh.kernel.config import load_config

from aiosh.session import make_shell

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def k(tmp_path_factory, kernel_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg")))
    cfg = load_config(cwd=tmp_path_factory.mktemp("cwd"), overrides={
        "kernel": {"slots": 4, "kv_cells": 8192}, "storage": {"path": str(tmp_path_factory.mktemp("db") / "a.db")},
    })
    kern = kernel_factory(cfg)
    yield kern
    kern.shutdown()
    mp.undo()


class Term:
    """An interactive shell on the real kernel, its output collected as the terminal would get it."""

    def __init__(self, kernel: Kernel, cwd: Path) -> None:
        self.out: list[str] = []
        self.err: list[str] = []
        self.shell = make_shell(kernel, kernel.config, stdout=self.out.append, stderr=self.err.append, stdin=None,
                                interactive=True)
        self.shell.interp.state.cwd = str(cwd)

    def __call__(self, line: str) -> tuple[str, str, int]:
        self.out.clear()
        self.err.clear()
        status = self.shell.run_line(line)
        return "".join(self.out), "".join(self.err), status

    def close(self) -> None:
        self.shell.hangup()
        self.shell.wait_background(10)


@pytest.fixture()
def term(k, tmp_path):
    t = Term(k, tmp_path)
    yield t
    t.close()


def _burn(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def test_kill_applies_the_signal_before_it_returns(term) -> None:
    out, err, st = term("sleep 20 & kill -STOP %1; ps -o stat -p $!; kill -CONT %1; ps -o stat -p $!; kill %1; wait %1")
    assert err.count("\n") == 1 and re.match(r"\[1\] \d+\n", err), err
    stats = [ln.strip() for ln in out.splitlines() if ln.strip() and ln.strip() != "STAT"]
    assert stats[0].startswith("T"), out  # stopped the moment kill returned
    assert stats[1][0] in "RS", out  # and continued the moment the next kill returned
    assert st == 143


def test_stop_then_term_is_143_every_time_even_under_load(term) -> None:
    burners = _burn(2)
    try:
        statuses = []
        t0 = time.monotonic()
        for _ in range(12):
            statuses.append(term("sleep 20 & kill -STOP %1; kill %1; wait %1")[2])
        took = time.monotonic() - t0
    finally:
        for b in burners:
            b.kill()
            b.wait()
    assert statuses == [143] * 12
    assert took < 30  # not one of them slept its 20 s


def test_every_pid_a_job_prints_works_with_kill_wait_and_ps(term) -> None:
    out, err, st = term("{ sleep 20; } & p=$!; ps -p $p -o pid,stat,cmd; kill -STOP $p; ps -p $p -o stat; "
                        "kill -CONT $p; kill $p; wait $p")
    pid = int(re.match(r"\[1\] (\d+)\n", err).group(1))
    rows = out.splitlines()
    assert rows[1].split()[:2] == [str(pid), "R"] and rows[1].endswith("{ sleep 20; }"), out
    assert rows[3].strip() == "T", out
    assert st == 143
    bash = subprocess.run(["bash", "-c", "{ sleep 20; } & p=$!; kill $p; wait $p; echo $?"], capture_output=True,
                          text=True, timeout=30)
    assert bash.stdout.strip() == "143"  # bash's status for the same line


def test_compound_background_jobs_write_whole_lines(term) -> None:
    term.shell.run_line("set -o jobtags")
    out, err, st = term('{ chat --max-tokens 16 --seed 1 "Describe Paris."; } & '
                        '{ chat --max-tokens 16 --seed 2 "Describe Rome."; } & '
                        "for i in 1 2; do sleep 0.1; echo fg$i; done; wait")
    writes = list(term.out)
    assert st == 0 and "fg1\n" in writes and "fg2\n" in writes
    bg = [w for w in writes if w not in ("fg1\n", "fg2\n")]
    assert bg, writes
    for w in bg:  # each write is whole lines of one job, each line tagged
        assert w.endswith("\n"), writes
        for line in w.splitlines():
            assert re.match(r"\[[12]\] ", line), writes
    assert {w[:4] for w in bg} == {"[1] ", "[2] "}
