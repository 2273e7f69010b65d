"""Issue 18 beyond the differential corpus: start-up flags, output order, child stdin and limits through the real
`aiosh` (kernel and model), and the prompt's PS1 escapes and `!!` / `!$` expansion."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from aiosh.shell import Shell
from aiosh.shell.prompt import HistoryError, expand_history, render_ps1

AIOSH = [sys.executable, "-m", "aiosh.cli"]
SHELL_ONLY = [sys.executable, "-m", "aiosh.shell"]


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path / "cfg")})
    return env


def _run(argv: list[str], tmp_path: Path, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=120, **kw)


@pytest.mark.timeout(180)
def test_real_aiosh_keeps_the_order_of_stdout_and_stderr_in_one_file(tmp_path: Path) -> None:
    script = "for i in 1 2; do echo out$i; echo err$i >&2; done; set -x; echo traced"
    with open(tmp_path / "log", "w") as log:
        r = subprocess.run([*AIOSH, "-c", script], cwd=tmp_path, env=_env(tmp_path), stdout=log,
                           stderr=subprocess.STDOUT, timeout=120)  # fmt: skip
    assert r.returncode == 0
    assert (tmp_path / "log").read_text() == "out1\nerr1\nout2\nerr2\n+ echo traced\ntraced\n"


@pytest.mark.timeout(180)
def test_real_aiosh_takes_bash_startup_flags(tmp_path: Path) -> None:
    r = _run([*AIOSH, "-e", "-u", "--norc", "-c", "echo $0 $1; false; echo never", "name", "one"], tmp_path)
    assert (r.stdout, r.returncode) == ("name one\n", 1)
    r = _run([*AIOSH, "-o", "pipefail", "-c", "false | true"], tmp_path)
    assert r.returncode == 1


@pytest.mark.timeout(180)
def test_real_aiosh_children_read_only_what_they_take_from_a_loop_input(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("a\nb\nc\n")
    script = 'while read -r l; do echo "$l"; /bin/true; done < f; while read -r l; do echo "<$l>"; head -c 2 >/dev/null; done < f'
    r = _run([*AIOSH, "-c", script], tmp_path)
    assert (r.stdout, r.returncode) == ("a\nb\nc\n<a>\n<c>\n", 0)
    # an agent that reads nothing (sleep) takes nothing; one that reads everything (chat) takes the rest
    script = 'while read -r l; do echo "$l"; sleep 0; done < f; while read -r l; do echo "[$l]"; chat --max-tokens 1 --seed 1 x > /dev/null; done < f'
    r = _run([*AIOSH, "-c", script], tmp_path)
    assert (r.stdout, r.returncode) == ("a\nb\nc\n[a]\n", 0)
    # and aiosh's own stdin when it is a file: `head` takes one line, the shell's `read` the next
    with open(tmp_path / "f") as stdin:
        r = subprocess.run([*AIOSH, "-c", "read x; echo got $x; head -n 1; read y; echo then $y"], cwd=tmp_path,
                           env=_env(tmp_path), stdin=stdin, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.stdout == "got a\nb\nthen c\n"


def test_nesting_limits_give_one_line_and_status_2(tmp_path: Path) -> None:
    deep60 = "(" * 60 + "1" + ")" * 60
    r = _run([*SHELL_ONLY, "-c", f"echo $(( {deep60} ))"], tmp_path)
    assert (r.stdout, r.returncode, r.stderr) == ("1\n", 0, "")
    deep = "(" * 5000 + "1" + ")" * 5000
    r = _run([*SHELL_ONLY, "-c", f"echo $(( {deep} ))"], tmp_path)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr
    r = _run([*SHELL_ONLY, "-c", "f() { f; }; f"], tmp_path)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "nesting" in r.stderr
    n = 300
    nested = "if true; then " * n + "echo deep; " + "fi; " * n
    r = _run([*SHELL_ONLY, "-c", nested], tmp_path)
    assert (r.stdout, r.returncode) == ("deep\n", 0)
    r = _run([*SHELL_ONLY, "-c", "echo {1..600000}"], tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "brace expansion" in r.stderr


def test_ps1_escapes(tmp_path: Path) -> None:
    sh = Shell(env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}, cwd=str(tmp_path))
    sh.run_line("mkdir -p sub; cd sub")
    text = render_ps1(r"\w|\W|\j|\$|\\|\[x\]", sh)
    assert text == "~/sub|sub|0|" + ("#" if os.geteuid() == 0 else "$") + "|\\|x"
    assert render_ps1(r"\h", sh) and "\\" not in render_ps1(r"\u@\h", sh)


def test_history_expansion() -> None:
    assert expand_history("echo !! and !$", "ls -l /tmp") == ("echo ls -l /tmp and /tmp", True)
    assert expand_history("echo '!!' \"!$\"", "a b") == ("echo '!!' \"b\"", True)
    assert expand_history("echo hi!", "x") == ("echo hi!", False)
    with pytest.raises(HistoryError):
        expand_history("!!", None)


@pytest.mark.timeout(180)
def test_prompt_honours_ps1_and_history_expansion_in_the_real_repl(tmp_path: Path) -> None:
    pexpect = pytest.importorskip("pexpect")
    env = _env(tmp_path)
    env.update(TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1")
    child = pexpect.spawn(sys.executable, ["-m", "aiosh.cli"], env=env, cwd=str(tmp_path), encoding="utf-8",
                          timeout=90, dimensions=(40, 160))  # fmt: skip
    try:
        child.expect(r"aiosh(\[\d+\])?\$")
        child.sendline(r"PS1='<\W|\j>% '")
        child.expect(r"<~\|0>%")  # the folder is $HOME here, so \W shows ~
        child.sendline("echo one two")
        child.expect("one two")
        child.sendline("echo !$ again")  # bash prints the expanded line, then runs it
        child.expect(r"echo two again\r\n")
        child.expect(r"two again\r\n")
        child.sendline("!!")
        child.expect(r"echo two again\r\n")
        child.expect(r"two again\r\n")
    finally:
        child.sendline("exit")
        child.expect(pexpect.EOF, timeout=60)
