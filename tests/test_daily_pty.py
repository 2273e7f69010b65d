"""Daily use in a pseudo-terminal: background output in whole lines that never lands inside the foreground's,
`[1] PID` before a job's first line, Done notices after the foreground's output, Ctrl-Z lets no token out, and a
new line after ^C and ^Z (as bash)."""

from __future__ import annotations

import os
import re
import sys
import time

import pytest

pexpect = pytest.importorskip("pexpect")

pytestmark = [pytest.mark.timeout(240)]
PROMPT = r"aiosh(\[\d+\])?\$"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def sh(tmp_path):
    env = dict(os.environ)
    env.update(XDG_CONFIG_HOME=str(tmp_path / "c"), XDG_DATA_HOME=str(tmp_path / "d"), TERM="xterm",
               PROMPT_TOOLKIT_NO_CPR="1")
    child = pexpect.spawn(sys.executable, ["-m", "aiosh.cli"], env=env, cwd=str(tmp_path), encoding="utf-8",
                          timeout=120, dimensions=(40, 300))
    child.expect(PROMPT)
    yield child
    if child.isalive():
        child.sendline("kill %1 %2 %3 2>/dev/null; exit")
        child.sendline("exit")
        child.expect(pexpect.EOF, timeout=60)


def plain(text: str) -> str:
    return ANSI.sub("", text).replace("\r", "")


def run_until(child, marker: str, timeout: float = 180) -> str:
    """Everything up to the line `marker` (an echo at the end of the command line), ANSI codes removed."""
    child.expect(re.escape(marker) + r"\r\n", timeout=timeout)
    return plain(child.before)


def test_background_jobs_write_whole_tagged_lines_never_inside_foreground_text(sh):
    sh.sendline("set -o jobtags; echo READY-$((6*7))")
    run_until(sh, "READY-42")  # (its output, not the prompt of the redrawn input line, which may come first)
    sh.expect(PROMPT)
    sh.sendline('{ for i in 1 2 3; do printf aaa; sleep 0.2; echo AAA; done; } & '
                '{ for i in 1 2 3; do chat --max-tokens 12 --seed $i "Say hi."; done; } & '
                "printf 'fg-start '; sleep 1.5; echo fg-end; wait; echo END-$((6*7))")
    got = run_until(sh, "END-42")
    lines = [ln for ln in got.split("\n") if ln.strip()]
    assert "fg-start fg-end" in lines, got  # the foreground line was never cut by a background one
    body = [ln for ln in lines if ln != "fg-start fg-end" and not re.search(PROMPT, ln)]  # not the echoed line
    notices = [ln for ln in body if re.fullmatch(r"\[\d\] \d+", ln)]
    assert len(notices) == 2
    for n in (1, 2):
        mine = [i for i, ln in enumerate(body) if ln.startswith(f"[{n}] ")]
        assert re.fullmatch(rf"\[{n}\] \d+", body[mine[0]]), body  # `[n] PID` before the job's first line
    for ln in body:
        assert re.match(r"\[[12]\] ", ln), (ln, body)  # every background line whole, with its tag
        assert not re.search(r".\[[12]\] ", ln[1:]), (ln, body)  # and nothing of another job inside it
    assert [ln for ln in body if ln.startswith("[1] ")][1:] == ["[1] aaaAAA"] * 3, body
    assert len([ln for ln in body if ln.startswith("[2] ")]) >= 4  # three answers (and the notice)


def test_done_notice_comes_after_the_foreground_output_before_the_prompt(sh):
    sh.sendline("sleep 0.3 & chat --max-tokens 24 --seed 3 'Name three rivers.'; echo FG-$((2+3))")
    got = run_until(sh, "FG-5")
    assert "Done" not in got  # not in the middle of the foreground's output
    sh.expect(PROMPT)
    after = plain(sh.before)
    assert re.search(r"\[1\]\+\s+Done\s+sleep 0.3", after), after


def test_ctrl_z_lets_no_token_escape_and_prompts_start_on_a_new_line(sh):
    sh.sendline('chat --max-tokens 200 --seed 1 "Write a long story about a dragon and a knight."')
    sh.expect(r"\r\r?\n")
    sh.expect(r"[A-Za-z]+\W+[A-Za-z]+\W+[A-Za-z]+", timeout=120)  # it is streaming
    sh.sendcontrol("z")
    sh.expect(r"\^Z\r\n\[1\]\+\s+Stopped\s+chat", timeout=30)  # ^Z, then the notice on a line of its own
    sh.expect(PROMPT)
    time.sleep(3)
    try:
        extra = sh.read_nonblocking(4096, timeout=0.5)
    except pexpect.TIMEOUT:
        extra = ""
    assert not re.search(r"[A-Za-z]", plain(extra)), extra  # no token of the stopped agent after the prompt
    sh.sendline("fg")
    sh.expect_exact("chat --max-tokens 200")
    time.sleep(1.0)
    sh.sendcontrol("c")
    sh.expect(r"\^C\r\n", timeout=30)  # bash ends the line after ^C: the prompt starts on its own
    sh.expect(PROMPT)
    sh.sendline('echo "st=<$?>"')
    sh.expect(r"st=<130>")
