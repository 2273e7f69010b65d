"""The Shell class as callers use it: entry points, diagnostics per mode, streams, state, and import hygiene."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from aiosh.kernel.streams import Pipe

from aiosh.shell import Shell

sys.path.insert(0, str(Path(__file__).parent))
from test_shell_fakehost import FakeAgentHost  # noqa: E402

pytestmark = pytest.mark.timeout(30)  # agents and pipelines run on threads: never hang the suite


def make(tmp_path: Path, **kw: object) -> tuple[Shell, list[str], list[str]]:
    out: list[str] = []
    err: list[str] = []
    sh = Shell(stdout=out.append, stderr=err.append, cwd=str(tmp_path), **kw)  # type: ignore[arg-type]
    return sh, out, err


def test_run_source_runs_lines_before_a_syntax_error_then_stops(tmp_path: Path) -> None:
    sh, out, err = make(tmp_path)
    assert sh.run_source("echo one\necho two; fi\necho three", filename="script.aish") == 2
    assert "".join(out) == "one\n"
    assert "".join(err) == (
        "script.aish: line 2: syntax error near unexpected token `fi'\nscript.aish: line 2: `echo two; fi'\n"
    )


def test_diagnostic_shapes_per_mode(tmp_path: Path) -> None:
    sh, _out, err = make(tmp_path)
    sh.run_source("true\nnosuch", filename="-c")
    sh.run_source("nosuch", filename="prog.aish")
    sh.run_source("nosuch")
    assert err == [
        "aiosh: line 2: nosuch: command not found\n",
        "prog.aish: line 1: nosuch: command not found\n",
        "aiosh: line 1: nosuch: command not found\n",
    ]
    sh2, _o, err2 = make(tmp_path, interactive=True)
    assert sh2.run_line("nosuch") == 127
    assert sh2.run_line("echo a; fi") == 2
    assert err2 == ["aiosh: nosuch: command not found\n", "aiosh: syntax error near unexpected token `fi'\n"]


def test_argv0_names_the_shell(tmp_path: Path) -> None:
    sh, out, err = make(tmp_path, argv0="mysh", args=["x", "y"])
    sh.run_source('echo $0 $# "$2"; nosuch', filename="-c")
    assert out == ["mysh 2 y\n"]
    assert err == ["mysh: line 1: nosuch: command not found\n"]


def test_run_line_keeps_state_between_lines(tmp_path: Path) -> None:
    sh, out, _err = make(tmp_path, interactive=True)
    (tmp_path / "d").mkdir()
    sh.run_line("x=5; cd d")
    sh.run_line("echo $x; pwd")
    assert out == ["5\n", f"{tmp_path}/d\n"]
    assert sh.cwd == f"{tmp_path}/d" and sh.vars["x"] == "5"
    assert sh.last_status == 0


def test_multi_line_compound_in_run_line(tmp_path: Path) -> None:
    sh, out, _err = make(tmp_path, interactive=True)
    assert sh.run_line("for i in 1 2\ndo\n echo $i\ndone") == 0
    assert out == ["1\n", "2\n"]


def test_is_complete(tmp_path: Path) -> None:
    sh, _out, _err = make(tmp_path)
    assert sh.is_complete("echo hi")
    assert not sh.is_complete("if true; then")
    assert not sh.is_complete('echo "open')
    assert not sh.is_complete("echo a |")
    assert not sh.is_complete("cat <<EOF\nbody")
    assert sh.is_complete("cat <<EOF\nbody\nEOF")
    assert sh.is_complete("echo a; fi")  # complete, though wrong: run it to get the error


def test_exit_sets_exited(tmp_path: Path) -> None:
    sh, _out, _err = make(tmp_path, interactive=True)
    assert sh.exited is None
    assert sh.run_line("exit 7") == 7
    assert sh.exited == 7


def test_errexit_property(tmp_path: Path) -> None:
    sh, out, _err = make(tmp_path)
    sh.errexit = True
    assert sh.run_source("false; echo no") == 1
    assert out == [] and sh.errexit


def test_streams_can_be_pipes(tmp_path: Path) -> None:
    out, err = Pipe("out"), Pipe("err")
    sh = Shell(stdout=out, stderr=err, cwd=str(tmp_path))
    sh.run_source("echo to-out; echo to-err >&2", filename="-c")
    assert out.read_nowait() == "to-out\n"
    assert err.read_nowait() == "to-err\n"
    assert not out.closed


def test_stdin_none_reads_end_of_file(tmp_path: Path) -> None:
    sh, out, _err = make(tmp_path)
    assert sh.run_source("cat; echo after") == 0
    assert out == ["after\n"]


def test_host_programs_can_be_disabled(tmp_path: Path) -> None:
    sh, _out, err = make(tmp_path, host_programs=False)
    assert sh.run_source("ls", filename="-c") == 127
    assert err == ["aiosh: line 1: ls: command not found\n"]


def test_host_programs_run_in_the_shell_cwd_with_exported_env(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    sh, out, _err = make(tmp_path, env={"PATH": os.environ["PATH"], "KEEP": "k"})
    assert sh.run_source("cd d; pwd -P > /dev/null; /bin/pwd; NEW=n sh -c 'echo $KEEP$NEW'", filename="-c") == 0
    assert "".join(out) == f"{os.path.realpath(tmp_path)}/d\nkn\n"


def test_special_parameters(tmp_path: Path) -> None:
    sh, out, _err = make(tmp_path, args=["a", "b c"], host_programs=False)
    sh.run_source('echo $$ $#; echo "$@"; false; echo $?; set -e; echo $-')
    assert out == [f"{os.getpid()} 2\n", "a b c\n", "1\n", "e\n"]


def test_agent_gets_cwd_env_and_stdin(tmp_path: Path) -> None:
    host = FakeAgentHost()
    sh, out, _err = make(tmp_path, agents=host, env={"PATH": "/usr/bin:/bin"})
    assert sh.run_source("export A=1; echo hello | upper; B=2 getenv B") == 0
    assert out == ["HELLO\n", "2\n"]
    upper = host.started[0]
    assert upper.cwd == str(tmp_path) and upper.env["A"] == "1" and upper.argv == []


def test_agent_output_into_files_is_complete_before_the_next_command(tmp_path: Path) -> None:
    sh, out, _err = make(tmp_path, agents=FakeAgentHost())
    assert sh.run_source("say one > f; say two >> f; cat f; say err 2>&1 >/dev/null | cat") == 0
    assert "".join(out) == "one\ntwo\n"


def test_pipe_of_many_stages_streams(tmp_path: Path) -> None:
    sh, out, _err = make(tmp_path, agents=FakeAgentHost())
    assert sh.run_source("say abc | upper | cat | upper | cat") == 0
    assert out == ["ABC\n"]


def test_no_terminal_libraries_or_kernel_internals_imported() -> None:
    code = (
        "import sys, aiosh.shell; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('prompt_toolkit', 'textual', 'llama_cpp') "
        "or (m.startswith('aiosh.kernel.') and m != 'aiosh.kernel.streams')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       cwd=Path(__file__).parent.parent)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.timeout(10)
def test_heredoc_warning_at_end_of_file(tmp_path: Path) -> None:
    sh, out, err = make(tmp_path)
    assert sh.run_source("cat <<EOF\nabc", filename="-c") == 0
    assert out == ["abc\n"]
    assert err == ["aiosh: line 2: warning: here-document at line 1 delimited by end-of-file (wanted `EOF')\n"]


def test_dynamic_variables(tmp_path: Path) -> None:
    sh, out, _err = make(tmp_path)
    sh.run_source("echo $LINENO\n[ $RANDOM -lt 32768 ] && echo random; echo $SECONDS; LINENO=x; echo $LINENO")
    assert out == ["1\n", "random\n", "0\n", "x\n"]


@pytest.mark.timeout(10)
def test_pipelines_stream(tmp_path: Path) -> None:
    """The second stage sees the first line long before the first stage ends."""
    out = Pipe("out")
    sh = Shell(agents=FakeAgentHost(), stdout=out, cwd=str(tmp_path))
    seen: list[tuple[float, str]] = []

    def reader() -> None:
        while (chunk := out.read(5)) not in ("", None):
            seen.append((time.monotonic(), chunk))

    t = threading.Thread(target=reader)
    t.start()
    t0 = time.monotonic()
    assert sh.run_source("{ echo a; sleep 0.5; echo b; } | upper | cat") == 0
    out.close()
    t.join()
    assert "".join(c for _, c in seen) == "A\nB\n"
    assert seen[0][0] - t0 < 0.3
