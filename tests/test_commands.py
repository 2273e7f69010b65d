"""The kernel-aware builtins (aiosh/commands) read their command lines through one declared parser: the lines they
accepted and the errors they gave before (hand-written loops) stay as they were. No model."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from aiosh.kernel.storage import Storage
from aiosh.kernel.streams import Pipe

from aiosh.commands import observe, storage, tools
from aiosh.commands.argv import UsageError
from tests.test_monitor_backends import PROCS, ObserveKernel
from tests.test_storage import proc_info


def text_or_error(fn, kernel, argv: list[str]) -> str:
    try:
        return fn(kernel, argv)
    except UsageError as exc:
        assert exc.status == 2
        return f"error: {exc}"


@pytest.mark.parametrize(("argv", "want"), [
    (["-f", "-o", "pid", "--sort", "-pid", "-p", "1,2"], "PID\n  2\n  1\n"),
    (["-o"], "error: -o: missing argument"),
    (["-o", "pid,bogus"], "error: -o: unknown column 'bogus' (known: "),
    (["--sort", "x"], "error: --sort: unknown column 'x' (known: "),
    (["-p", "a"], "error: -p: invalid process id 'a'"),
    (["x"], "error: x: unknown option"),
    (["--"], "error: --: unknown option"),
    (["--help"], "error: --help: unknown option"),
])
def test_ps_options(argv, want):
    assert text_or_error(observe.ps, ObserveKernel(PROCS), argv).startswith(want)


def test_free_and_the_help_of_ps():
    assert text_or_error(observe.free, ObserveKernel(PROCS), ["x", "-b"]) == "error: x: unknown option"
    assert "kv-bytes" in observe.free(ObserveKernel(PROCS), ["-b"])
    details = observe.ps_details().splitlines()
    assert details[1] == "  -f             the process tree: children indented under their parent (PPID)"
    assert details[3].startswith("  --sort [-]COL  sort by a column (- descending); pid, ppid")


@pytest.fixture
def store(tmp_path):
    with Storage(tmp_path / "a.db") as s:
        for pid in (1, 2, 3):
            s.save_process(proc_info(pid))
        s.history_add("echo a")
        s.history_add("echo b")
        s.flush()
        yield s


def run(fn, store: Storage, *argv: str) -> tuple[int, str, str]:
    out, err = Pipe(), Pipe()
    status = fn(SimpleNamespace(storage=store), list(argv), out, err)
    out.close()
    err.close()
    return status, out.read_all(), err.read_all()


@pytest.mark.parametrize(("cmd", "argv", "status", "first"), [
    ("logs", ["-s", "2", "-m"], 0, "1:2  chat hello"),
    ("logs", ["--run=1", "--", "3"], 0, "1:3  chat hello"),
    ("logs", ["2", "3"], 2, "aiosh: logs: 3: only one process at a time (usage: logs "),
    ("logs", [], 2, "aiosh: logs: which process? give PID or RUN:PID"),
    ("logs", ["--run"], 2, "aiosh: logs: --run: missing number"),
    ("logs", ["--run", "0", "2"], 2, "aiosh: logs: --run: '0': must be at least 1"),
    ("logs", ["-x", "2"], 2, "aiosh: logs: -x: unknown option"),
    ("last", ["-n", "1"], 0, "RUN:PID"),
    ("last", ["-n2", "--run=1"], 0, "RUN:PID"),
    ("last", ["x"], 2, "aiosh: last: x: unexpected argument"),
    ("last", ["-"], 2, "aiosh: last: -: unknown option"),
    ("last", ["--"], 2, "aiosh: last: --: unknown option"),
    ("history", ["1"], 0, "    2  echo b"),
    ("history", ["-n", "2"], 0, "    1  echo a"),
    ("history", ["x", "-q"], 2, "aiosh: history: x: unexpected argument"),
    ("history", ["0"], 2, "aiosh: history: N: '0': must be at least 1"),
    ("memsearch", [], 2, "aiosh: memsearch: nothing to search for"),
    ("memsearch", ["--pid"], 2, "aiosh: memsearch: --pid: missing PID"),
    ("memsearch", ["-n", "x", "w"], 2, "aiosh: memsearch: -n: 'x': not a number"),
    ("memsearch", ["--memories", "--messages", "-", "w"], 0, ""),
])
def test_storage_commands_options(store, cmd, argv, status, first):
    got, out, err = run(getattr(storage, cmd), store, *argv)
    assert got == status
    assert (out if status == 0 else err).startswith(first)


def test_tools_and_audit_options():
    kernel = SimpleNamespace(tool_types=lambda: {}, mcp=None, storage=SimpleNamespace(enabled=False, run=1),
                             access=SimpleNamespace(recent=lambda n, pid=None: []))
    assert tools.tools(kernel, ["-l"]) == "no tools\n"
    for argv, want in ((["-x"], "-x: unknown option"), (["--"], "--: unknown option"), (["-"], "-: no such tool")):
        assert text_or_error(tools.tools, kernel, argv) == f"error: {want}"
    assert tools.audit(kernel, ["-n5", "--pid=3"]) == "no access decisions yet\n"
    for argv, want in ((["x"], "x: unknown argument"), (["-n"], "-n: '': not a number"),
                       (["--pid", "0"], "--pid: '0': must be at least 1")):
        assert text_or_error(tools.audit, kernel, argv) == f"error: {want}"


def test_top_options():
    from aiosh.commands.top import TOP

    assert TOP.parse([]).values["d"] == 0.5 and TOP.parse(["-d", "2"]).values["d"] == 2.0
    for argv, want in ((["-d", "0"], "-d: invalid interval '0'"), (["-d", "x"], "-d: invalid interval 'x'"),
                       (["-d"], "-d: unknown option"), (["-x"], "-x: unknown option")):
        with pytest.raises(UsageError, match=f"^{want}$"):
            TOP.parse(argv)
    assert TOP.parse(["x"]).operands == ["x"]  # (top reports an operand as an unknown option)
