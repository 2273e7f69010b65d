"""The interactive shell in a pseudo-terminal: Ctrl-C, Ctrl-Z, fg, Done notices, completion, exit warnings."""

from __future__ import annotations

import os
import sys

import pytest

pexpect = pytest.importorskip("pexpect")

pytestmark = [pytest.mark.timeout(180)]
PROMPT = r"aiosh(\[\d+\])?\$"


@pytest.fixture
def sh(tmp_path):
    env = dict(os.environ)
    env.update(XDG_CONFIG_HOME=str(tmp_path / "c"), XDG_DATA_HOME=str(tmp_path / "d"), TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1")
    child = pexpect.spawn(sys.executable, ["-m", "aiosh.cli"], env=env, cwd=str(tmp_path), encoding="utf-8",
                          timeout=60, dimensions=(40, 160))
    child.expect(PROMPT)
    yield child
    if child.isalive():
        child.sendline("exit")
        child.sendline("exit")
        child.expect(pexpect.EOF, timeout=30)


def status(child) -> str:
    """The last status, read through a marker (the prompt is redrawn as we type, so it is no delimiter)."""
    child.sendline('echo "st=<$?>"')
    child.expect(r"st=<(\d+)>\r\n")
    return child.match.group(1)


def test_ctrl_c_interrupts_the_foreground_agent(sh):
    sh.sendline("sleep 30")
    sh.expect_exact("sleep 30")
    import time

    time.sleep(1.5)
    sh.sendcontrol("c")
    sh.expect(PROMPT, timeout=20)
    assert status(sh) == "130"


def test_ctrl_z_stops_then_fg_resumes(sh):
    sh.sendline("sleep 30")
    sh.expect_exact("sleep 30")
    import time

    time.sleep(1.5)
    sh.sendcontrol("z")
    sh.expect(r"\[1\]\+\s+Stopped\s+sleep 30", timeout=20)
    sh.expect(PROMPT)
    assert status(sh) == "148"
    sh.sendline("jobs")
    sh.expect(r"\[1\]\+\s+Stopped\s+sleep 30")
    sh.sendline("fg")
    sh.expect_exact("sleep 30")
    time.sleep(1.0)
    sh.sendcontrol("c")
    sh.expect(PROMPT, timeout=20)
    assert status(sh) == "130"


def test_background_job_done_notice_before_next_prompt(sh):
    sh.sendline("sleep 0.3 &")
    sh.expect(r"\[1\] \d+")
    sh.expect(PROMPT)
    import time

    time.sleep(2.0)
    sh.sendline("")
    sh.expect(r"\[1\]\+\s+Done\s+sleep 0.3", timeout=20)
    sh.expect(PROMPT)


def test_completion_of_commands_and_agents(sh):
    sh.send("sle\t")
    # the completed word, which prompt-toolkit may draw in two pieces with escape sequences between them
    sh.expect(r"sle(\x1b\[[0-9;?]*[A-Za-z])*ep", timeout=20)
    sh.sendcontrol("u")
    sh.send("\r")
    sh.expect(PROMPT)


def test_exit_with_running_jobs_warns_once(sh):
    sh.sendline("sleep 60 &")
    sh.expect(PROMPT)
    sh.sendline("exit")
    sh.expect_exact("There are running jobs.")
    sh.expect(PROMPT)
    sh.sendline("exit")
    sh.expect(pexpect.EOF, timeout=30)


def test_top_opens_the_monitor_and_q_returns_with_jobs_intact(sh):
    sh.sendline("sleep 30 &")
    sh.expect(r"\[1\] \d+")
    sh.sendline("top")
    sh.expect("sleep 30", timeout=60)  # the agent's row in the monitor
    import time

    time.sleep(0.5)
    sh.send("q")
    sh.expect(r"aiosh\[1\]\$", timeout=30)
    sh.sendline("jobs")
    sh.expect(r"\[1\]\+\s+Running\s+sleep 30")
    sh.sendline("kill %1")
    sh.expect(PROMPT)


def test_monitor_flag_runs_a_script_with_its_output_in_the_log_panel(tmp_path):
    env = dict(os.environ)
    env.update(XDG_CONFIG_HOME=str(tmp_path / "c"), XDG_DATA_HOME=str(tmp_path / "d"), TERM="xterm")
    child = pexpect.spawn(sys.executable, ["-m", "aiosh.cli", "--monitor", "-c", "echo hello-from-script; exit 3"],
                          env=env, cwd=str(tmp_path), encoding="utf-8", timeout=60, dimensions=(40, 140))
    child.expect("hello-from-script")
    child.expect("script ended")
    child.send("q")
    child.expect(pexpect.EOF, timeout=30)
    child.close()
    assert child.exitstatus == 3


def _pty_with_agents(tmp_path):
    env = dict(os.environ)
    env.update(XDG_CONFIG_HOME=str(tmp_path / "c"), XDG_DATA_HOME=str(tmp_path / "d"), TERM="xterm",
               PROMPT_TOOLKIT_NO_CPR="1")
    agents = os.path.join(os.path.dirname(__file__), "agents")
    (tmp_path / "aiosh.toml").write_text(f'[plugins]\npaths = ["{agents}"]\n[access]\nallow = ["tool:write_file", "write:./"]\n')
    child = pexpect.spawn(sys.executable, ["-m", "aiosh.cli"], env=env, cwd=str(tmp_path), encoding="utf-8",
                          timeout=60, dimensions=(40, 160))
    child.expect(PROMPT)
    return child


def test_yes_no_confirmation_of_an_irreversible_action(tmp_path):
    sh = _pty_with_agents(tmp_path)
    try:
        sh.sendline("writer a.txt hello")  # foreground: asked at once
        sh.expect(r"\[y/N\]")
        sh.sendline("y")
        sh.expect("written")
        assert (tmp_path / "a.txt").read_text() == "hello"
        sh.sendline("writer b.txt nope &")  # background: asked before the next prompt
        sh.expect(r"\[1\] \d+")
        import time

        time.sleep(2)
        sh.sendline("")
        sh.expect(r"\[y/N\]")
        sh.sendline("n")
        # the refused agent ends a moment later: its notice comes before the first prompt after it has ended (as in
        # bash), so ask `jobs` until it is no longer running (a loaded machine can take seconds)
        deadline = time.monotonic() + 60
        while True:
            sh.sendline("jobs")
            if sh.expect([r"\[1\]\+\s+(Done|Exit 126)", r"\[1\]\+\s+Running"]) == 0:
                break
            assert time.monotonic() < deadline, "the refused agent never ended"
            time.sleep(0.5)
        assert not (tmp_path / "b.txt").exists()
    finally:
        sh.sendline("exit")
        sh.expect(pexpect.EOF, timeout=30)
