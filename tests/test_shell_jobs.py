"""Job control with the fake AgentHost: background jobs, the table, notices, kill/wait/fg/bg, Ctrl-C and Ctrl-Z."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from aiosh.shell import Shell

sys.path.insert(0, str(Path(__file__).parent))
from test_shell_fakehost import FakeAgentHost  # noqa: E402

pytestmark = pytest.mark.timeout(20)


class Term:
    """An interactive shell whose output is collected per line, as the REPL would print it."""

    def __init__(self, tmp_path: Path, *, interactive: bool = True) -> None:
        self.host = FakeAgentHost()
        self.out: list[str] = []
        self.err: list[str] = []
        self.shell = Shell(agents=self.host, stdout=self.out.append, stderr=self.err.append, cwd=str(tmp_path),
                           interactive=interactive, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})  # fmt: skip

    def __call__(self, line: str) -> tuple[str, str, int]:
        self.out.clear()
        self.err.clear()
        status = self.shell.run_line(line)
        return "".join(self.out), "".join(self.err), status

    def after(self, seconds: float, sig: int) -> None:
        """Press Ctrl-C / Ctrl-Z `seconds` from now (the REPL's signal handler calls foreground_signal)."""
        threading.Timer(seconds, self.shell.foreground_signal, args=(sig,)).start()

    def notices_within(self, seconds: float = 3.0) -> list[str]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            got = self.shell.take_notices()
            if got:
                return got
            time.sleep(0.02)
        return []


@pytest.fixture()
def term(tmp_path: Path) -> Term:
    return Term(tmp_path)


def test_background_job_prints_number_and_pid_and_sets_bang(term: Term) -> None:
    assert term("sleep 5 &") == ("", "[1] 100\n", 0)
    assert term("echo $!") == ("100\n", "", 0)
    assert term("sleep 5 &")[1] == "[2] 101\n"
    term("kill %1 %2")


def test_jobs_listing_in_bash_format(term: Term) -> None:
    term("sleep 5 &")
    term("sleep 6 &")
    term("say a | sleep 7 &")
    out, _err, st = term("jobs")
    assert st == 0
    assert out == (
        "[1]   Running                 sleep 5 &\n"
        "[2]-  Running                 sleep 6 &\n"
        "[3]+  Running                 say a | sleep 7 &\n"
    )
    time.sleep(0.1)
    assert term("jobs -l %3")[0] == (
        "[3]+   102 Done                    say a\n"
        "       103 Running                 | sleep 7 &\n"
    )
    assert term("jobs -p") == ("100\n101\n102\n", "", 0)
    term("kill %1 %2 %3")


def test_job_numbers(term: Term) -> None:
    term("sleep 5 &")
    term("sleep 5 &")
    term("kill %1; wait %1")
    assert term.shell.jobs.numbers() == [2]
    term("kill %2")


def test_kill_then_wait_gives_143_and_no_notice(term: Term) -> None:
    term("sleep 5 &")
    assert term("kill %1; wait %1") == ("", "", 143)
    assert term("jobs") == ("", "", 0)
    assert term.shell.take_notices() == []


def test_done_and_terminated_notices_before_the_prompt(term: Term) -> None:
    term("sleep 0.05 &")
    term("sleep 5 &")
    term("fail 3 &")
    time.sleep(0.3)
    term("kill %2")
    time.sleep(0.1)
    assert term.shell.take_notices() == [
        "[1]   Done                    sleep 0.05",
        "[2]-  Terminated              sleep 5",
        "[3]+  Exit 3                  fail 3",
    ]
    assert term.shell.take_notices() == []
    assert term("jobs") == ("", "", 0)


def test_jobs_reports_a_finished_job_once(term: Term) -> None:
    term("sleep 0.01 &")
    time.sleep(0.2)
    assert term("jobs") == ("[1]+  Done                    sleep 0.01\n", "", 0)
    assert term("jobs") == ("", "", 0)
    assert term.shell.take_notices() == []


def test_kill_errors(term: Term) -> None:
    assert term("kill %7") == ("", "aiosh: kill: %7: no such job\n", 1)
    assert term("kill 99") == ("", "aiosh: kill: (99) - No such process\n", 1)
    assert term("kill -s FOO 1") == ("", "aiosh: kill: FOO: invalid signal specification\n", 1)
    assert term("kill -BAR %1") == ("", "aiosh: kill: BAR: invalid signal specification\n", 1)
    out, err, st = term("kill")
    assert (out, st) == ("", 2) and err.startswith("kill: usage: kill [-s sigspec")


def test_kill_signal_forms(term: Term) -> None:
    for form, status in (("-9", 137), ("-KILL", 137), ("-SIGINT", 130), ("-s HUP", 129), ("-n 15", 143)):
        term("sleep 5 &")
        assert term(f"kill {form} %1; wait %1")[2] == status, form


def test_kill_by_pid_and_process_group(term: Term) -> None:
    term("sleep 5 | sleep 5 &")
    assert term("kill -TERM -100; wait %1") == ("", "", 143)
    term("sleep 5 &")
    assert term("kill $!; wait $!") == ("", "", 143)


def test_kill_l(term: Term) -> None:
    out, _err, st = term("kill -l")
    assert st == 0 and out.startswith(" 1) SIGHUP\t 2) SIGINT\t 3) SIGQUIT\t 4) SIGILL\t 5) SIGTRAP\n")
    assert term("kill -l 9 143 term SIGINT") == ("KILL\nTERM\n15\n2\n", "", 0)


def test_wait_forms(term: Term) -> None:
    assert term("wait 99") == ("", "aiosh: wait: pid 99 is not a child of this shell\n", 127)
    assert term("wait %4") == ("", "aiosh: wait: %4: no such job\n", 127)
    term("fail 4 &")
    assert term("wait $!")[2] == 4
    term("sleep 0.3 &")
    term("fail 2 &")
    assert term("wait -n")[2] == 2
    assert term("wait; echo $?") == ("0\n", "", 0)
    assert term("wait -n") == ("", "", 127)


def test_wait_is_interrupted_by_ctrl_c(term: Term) -> None:
    term("sleep 5 &")
    term.after(0.2, signal.SIGINT)
    t0 = time.monotonic()
    assert term("wait") == ("", "", 130)
    assert time.monotonic() - t0 < 3
    term("kill %1")


def test_ctrl_z_stops_the_foreground_job(term: Term) -> None:
    term.after(0.2, signal.SIGTSTP)
    assert term("sleep 5") == ("", "", 148)
    assert term.shell.take_notices() == ["[1]+  Stopped                 sleep 5"]
    assert term("echo $?; jobs") == ("148\n[1]+  Stopped                 sleep 5\n", "", 0)
    assert term.host.state(100) == "T"
    assert term("bg") == ("[1]+ sleep 5 &\n", "", 0)
    assert term("jobs") == ("[1]+  Running                 sleep 5 &\n", "", 0)
    assert term.host.state(100) == "S"
    term.after(0.2, signal.SIGINT)
    assert term("fg") == ("sleep 5\n", "", 130)
    assert term("jobs") == ("", "", 0)


def test_ctrl_z_works_with_a_host_that_sends_no_events(tmp_path: Path) -> None:
    class Silent(FakeAgentHost):
        def add_listener(self, fn) -> None:  # noqa: ANN001
            pass

    t = Term(tmp_path)
    t.host = Silent()
    t.shell = Shell(agents=t.host, stdout=t.out.append, stderr=t.err.append, cwd=str(tmp_path), interactive=True)
    t.after(0.2, signal.SIGTSTP)
    assert t("sleep 5") == ("", "", 148)
    assert t("jobs") == ("[1]+  Stopped                 sleep 5\n", "", 0)
    t("kill %1")


def test_fg_a_stopped_job_to_completion(term: Term) -> None:
    term.after(0.1, signal.SIGTSTP)
    assert term("sleep 0.4")[2] == 148
    term.shell.take_notices()
    assert term("fg %1") == ("sleep 0.4\n", "", 0)
    assert term.shell.take_notices() == []


def test_ctrl_c_ends_the_whole_command_line(term: Term) -> None:
    term.after(0.2, signal.SIGINT)
    t0 = time.monotonic()
    assert term("for i in 1 2 3; do sleep 1; done; echo never") == ("", "", 130)
    assert time.monotonic() - t0 < 1.0
    assert term("echo next") == ("next\n", "", 0)


def test_ctrl_c_reaches_shell_code_in_a_pipeline(term: Term) -> None:
    term.after(0.2, signal.SIGINT)
    out, _err, st = term("while true; do echo y; sleep 0.01; done | cat > /dev/null")
    assert st == 130


def test_stopping_a_pipeline_with_shell_code(term: Term) -> None:
    term.after(0.2, signal.SIGTSTP)
    assert term("sleep 5 | cat")[2] == 148
    assert term("jobs") == ("[1]+  Stopped                 sleep 5 | cat\n", "", 0)
    assert term("kill %1; wait %1")[2] in (143, 0)


def test_background_shell_code_is_a_job(term: Term) -> None:
    out, err, st = term("for i in 1 2; do sleep 5; done &")
    assert st == 0 and err.startswith("[1] ")
    assert term("jobs")[0] == "[1]+  Running                 for i in 1 2; do sleep 5; done &\n"
    assert term("kill %1; wait %1")[2] == 143


def test_background_and_or_list(term: Term) -> None:
    term("sleep 0.05 && say done-bg &")
    assert term.notices_within() == ["[1]+  Done                    sleep 0.05 && say done-bg"]
    assert "".join(term.out) == "done-bg\n"  # written while no line was running, as bash would


def test_disown(term: Term) -> None:
    term("sleep 5 &")
    assert term("disown; jobs") == ("", "", 0)
    assert term("disown") == ("", "aiosh: disown: current: no such job\n", 1)
    term("kill 100")


def test_exit_warns_once_about_jobs(term: Term) -> None:
    term("sleep 5 &")
    assert term("exit") == ("", "There are running jobs.\n", 1)
    assert term.shell.exited is None
    assert term("exit")[2] == 1
    assert term.shell.exited == 1
    term.shell.hangup()
    assert term.notices_within() == ["[1]+  Hangup                  sleep 5"]


def test_exit_warning_resets_after_another_command(term: Term) -> None:
    term.after(0.1, signal.SIGTSTP)
    term("sleep 5")
    assert term("exit")[1] == "There are stopped jobs.\n"
    term("true")
    assert term("exit")[1] == "There are stopped jobs.\n"
    term("kill %1")


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTSTP, 148)])
def test_foreground_signal_from_a_real_signal_handler(term: Term, sig: int, status: int) -> None:
    """The REPL turns the terminal's signals into foreground_signal calls from a handler on the main thread."""
    old = signal.signal(sig, lambda s, _f: term.shell.foreground_signal(s))
    try:
        threading.Timer(0.2, os.kill, args=(os.getpid(), sig)).start()
        assert term("sleep 5") == ("", "", status)
    finally:
        signal.signal(sig, old)
    term("kill %1")


def test_foreground_signal_without_a_job(term: Term) -> None:
    assert term.shell.foreground_signal(signal.SIGTSTP) is False


def test_script_waits_for_its_background_jobs(tmp_path: Path) -> None:
    t = Term(tmp_path, interactive=False)
    t0 = time.monotonic()
    assert t.shell.run_source("sleep 0.3 & echo started", filename="-c") == 0
    assert time.monotonic() - t0 >= 0.3
    assert t.out == ["started\n"] and t.err == []
    assert t.shell.take_notices() == []


def test_no_job_control_in_scripts(tmp_path: Path) -> None:
    out: list[str] = []
    err: list[str] = []
    sh = Shell(agents=FakeAgentHost(), stdout=out.append, stderr=err.append, cwd=str(tmp_path))
    assert sh.run_source("fg; bg", filename="-c") == 1
    assert "".join(err) == "aiosh: line 1: fg: no job control\naiosh: line 1: bg: no job control\n"


def test_agent_pipeline_shares_one_process_group(term: Term) -> None:
    term("say x | upper | sleep 5 &")
    groups = {p.pgid for p in term.host.started}
    assert groups == {100}
    term("kill %1")


def test_background_output_is_passed_on_whole_lines():
    """Two background writers on one terminal never interleave inside a line."""
    import threading as _t

    from aiosh.kernel.streams import Pipe

    from aiosh.shell import plumbing

    dst, a, b = Pipe("tty"), Pipe("a"), Pipe("b")
    pumps = [plumbing.pump_pipe(src, dst, close_dst=False, whole_lines=True) for src in (a, b)]

    def write(p: Pipe, word: str) -> None:
        for _ in range(50):
            for ch in word + "\n":
                p.write(ch)
        p.close()

    writers = [_t.Thread(target=write, args=(a, "alpha-alpha")), _t.Thread(target=write, args=(b, "beta-beta"))]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    for p in pumps:
        p.join(5)
    dst.close()
    lines = dst.read_all().splitlines()
    assert sorted(set(lines)) == ["alpha-alpha", "beta-beta"] and len(lines) == 100
