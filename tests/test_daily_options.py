"""Daily use, options and help: one declaration per agent gives its parser and its `--help`; run options anywhere
among an agent's options; `agents`, `help ps`, `tools` uncut; `logs %1` and `logs PID` of an earlier run;
completion after `run`, `nice -n N`, `time`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from aiosh.kernel import Kernel, argspec
from aiosh.kernel.config import load_config
from aiosh.kernel.storage import Storage
from aiosh.kernel.streams import Pipe

from aiosh.commands.storage import logs
from aiosh.commands.tools import tools
from aiosh.repl import command_position
from aiosh.session import make_shell
from aiosh.shell.agents import parse_options
from aiosh.shell.errors import ShellError

pytestmark = pytest.mark.timeout(120)


# --- the declaration and its parser (no model) ---------------------------------------------------------------------

OPTS = [argspec.opt("-c", "--continue", dest="resume", help="go on"),
        argspec.opt("-s", "--session", metavar="NAME", help="a session"),
        argspec.opt("-j", "--jobs", metavar="N", type=int, min=1, default=0, help="parallel")]


def test_parse_by_declaration() -> None:
    got = argspec.parse(OPTS, ["-c", "--max-tokens", "8", "-s", "x", "-j4", "hello", "world"])
    assert got.values == {"resume": True, "session": "x", "jobs": 4}
    assert got.operands == ["hello", "world"] and got.run == {"max_tokens": 8}
    assert argspec.parse(OPTS, ["hello", "-c"]).operands == ["hello", "-c"]  # options end at the first operand
    mixed = argspec.parse(OPTS, ["hello", "-c", "--", "-s"], intermixed=True)
    assert mixed.values["resume"] and mixed.operands == ["hello", "-s"]
    for argv, msg in ((["-x"], "-x: unknown option"), (["-s"], "-s: missing name"),
                      (["-j", "0"], "-j: invalid number '0'"), (["--jobs=x"], "--jobs: invalid number 'x'"),
                      (["--seed", "x"], "--seed: invalid number 'x'"), (["-c=1"], "-c=1: unknown option")):
        with pytest.raises(argspec.UsageError, match=re.escape(msg)):
            argspec.parse(OPTS, argv)
    with pytest.raises(argspec.HelpRequested):
        argspec.parse(OPTS, ["-c", "--help"])


def test_usage_and_help_come_from_the_declaration() -> None:
    assert argspec.usage_line("x", OPTS, "[WORDS...]") == "x [-c|--continue] [-s|--session NAME] [-j|--jobs N] [WORDS...]"
    text = argspec.help_text("x", "does x", "x [opts]", OPTS)
    assert text.startswith("usage: x [opts]\n\ndoes x\n\noptions:\n")
    assert "  -s, --session NAME" in text and "--max-tokens N" in text and "--class C" in text


def test_shell_takes_run_options_anywhere_among_the_agents_options() -> None:
    flags = {"-c": False, "--continue": False, "-s": True, "--session": True}
    opts, rest = parse_options("chat", ["-c", "--max-tokens", "64", "-s", "--seed", "--nice=3", "hi", "--seed", "1"],
                               agent_flags=flags)
    # `--seed` right after `-s` is -s's value; run options after the first operand belong to the prompt
    assert opts == {"max_tokens": 64, "nice": 3} and rest == ["-c", "-s", "--seed", "hi", "--seed", "1"]
    opts, rest = parse_options("chat", ["hi", "-c", "--seed", "1"], agent_flags=flags, intermixed=True)
    assert opts == {"seed": 1} and rest == ["hi", "-c"]
    assert parse_options("run", ["--seed", "2", "chat", "--seed", "3"]) == ({"seed": 2}, ["chat", "--seed", "3"])
    with pytest.raises(ShellError, match="chat: --max-tokens: invalid number 'x'"):
        parse_options("chat", ["-c", "--max-tokens", "x"], agent_flags=flags)


def test_completion_positions() -> None:
    assert command_position(["run"]) == "agent"
    assert command_position(["run", "--nice", "5", "--yes"]) == "agent"
    assert command_position(["nice", "-n", "5"]) == "command"
    assert command_position(["nice", "-5"]) == "command"
    assert command_position(["time"]) == "command"
    assert command_position(["time", "nice", "-n", "3"]) == "command"
    assert command_position(["echo", "run"]) == ""
    assert command_position(["nice", "-n"]) == ""


# --- through the kernel and the model -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def k(tmp_path_factory, kernel_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg")))
    db = tmp_path_factory.mktemp("db") / "a.db"
    cfg = load_config(cwd=tmp_path_factory.mktemp("cwd"), overrides={
        "kernel": {"slots": 4, "kv_cells": 8192}, "storage": {"path": str(db)},
    })
    kern = kernel_factory(cfg)
    kern.db_path = str(db)
    yield kern
    kern.shutdown()
    mp.undo()


class Sh:
    def __init__(self, kernel: Kernel, cwd: Path, interactive: bool = False) -> None:
        self.out: list[str] = []
        self.err: list[str] = []
        self.shell = make_shell(kernel, kernel.config, stdout=self.out.append, stderr=self.err.append, stdin=None,
                                interactive=interactive)
        self.shell.interp.state.cwd = str(cwd)

    def __call__(self, line: str) -> tuple[str, str, int]:
        self.out.clear()
        self.err.clear()
        status = self.shell.run_line(line)
        return "".join(self.out), "".join(self.err), status


def test_run_options_after_an_agents_own_option(k, tmp_path) -> None:
    sh = Sh(k, tmp_path)
    out, err, st = sh('chat -s day --max-tokens 3 --seed 4 --temperature 0 "Name a color."; echo "max=$?"')
    assert st == 0 and "max=0" in out, err
    first = k.storage.query("SELECT * FROM syscalls WHERE run = ? AND kind = 'llm' ORDER BY id DESC LIMIT 1",
                            (k.storage.run,))[0]
    assert 1 <= first["tokens_out"] <= 3  # --max-tokens reached the call though it came after -s day
    out2, _, st = sh('chat -c --max-tokens 64 --seed 4 --temperature 0 "And another?"')  # the issue's own line
    assert st == 0 and out2.strip()
    conv = k.storage.conversation_rows("day")
    assert len(conv) == 4  # -s day continued by -c: both turns in one conversation


def test_help_for_every_agent_from_its_declaration(k, tmp_path) -> None:
    sh = Sh(k, tmp_path)
    for name in ("chat", "map", "react", "summarize", "sleep"):
        out, err, st = sh(f"{name} --help")
        assert st == 0 and err == "" and out.startswith("usage: " + name), (name, out, err)
        assert "--max-tokens N" in out and "run options" in out
        again, _, st2 = sh(f"help {name}")
        assert st2 == 0 and again == out  # one text, two ways to ask
    out, _, _ = sh("chat --help")
    assert "-s, --session NAME" in out and "-c, --continue" in out and "--system TEXT" in out
    assert "-j, --jobs N" in sh("map --help")[0] and "--max-steps N" in sh("react --help")[0]
    out, err, st = sh("chat --bogus hi")
    assert st == 2 and err.startswith("chat: --bogus: unknown option (usage: chat ")
    out, err, st = sh("summarize --words x < /dev/null")
    assert st == 2 and err == "summarize: --words: invalid number 'x'\n"


def test_agents_lists_descriptions_and_help_ps_explains(k, tmp_path) -> None:
    sh = Sh(k, tmp_path)
    out, _, st = sh("agents")
    rows = dict(re.split(r"\s{2,}", ln, maxsplit=1) for ln in out.splitlines())
    assert st == 0 and rows["chat"] == k.agent_types()["chat"].description and rows["map"].startswith("run an agent")
    out, _, st = sh("help ps")
    assert st == 0 and out.startswith("ps: ps [-f]")
    for words in ("-p PID", "--sort", "-o COL", "--json", "stat", "STAT", "R running"):
        assert words in out, words


def test_tools_descriptions_are_never_cut(k) -> None:
    text = tools(k, [], columns=200)
    for spec in k.tool_types().values():
        first = " ".join(spec.description.strip().split("\n\n")[0].split())
        assert first in " ".join(text.split()), spec.name
    assert "…" not in text and max(len(ln) for ln in text.splitlines()) <= 200
    narrow = tools(k, [], columns=80)
    assert max(len(ln) for ln in narrow.splitlines()) <= 80 or "…" not in narrow


def test_logs_by_job_and_by_pid_of_an_earlier_run(k, tmp_path) -> None:
    sh = Sh(k, tmp_path, interactive=True)
    _, err, st = sh("sleep 0.1 &")
    pid = int(err.split()[1])
    sh("wait")
    out, err, st = sh("logs %1")  # the job has gone from the table; %1 still names its agent
    assert st == 0 and out.startswith(f"{k.storage.run}:{pid}  sleep 0.1"), err
    assert sh("logs %9")[1:] == ("aiosh: logs: %9: no such job\n", 1)
    other = k.spawn("sleep", ["0.1"])
    info = k.proc(other)
    k.wait(other, 10)
    k.storage.flush()
    earlier = k.storage.run
    later = Storage(k.db_path)  # a restart: a new run, in which pid has not been used
    try:
        out, err, st = _logs(later, [str(pid)])
        assert st == 0 and out.startswith(f"{earlier}:{pid}  sleep 0.1"), err
        later.save_process(info)  # the later run had a process of the same pid too
        later.flush()
    finally:
        later.close()
    third = Storage(k.db_path)
    try:
        out, err, st = _logs(third, [str(other)])
        assert st == 1 and "ambiguous" in err and f"{earlier}:{other}" in err and "RUN:PID" in err
    finally:
        third.close()


def _logs(storage: Storage, args: list[str]) -> tuple[str, str, int]:
    class K:
        pass

    kk = K()
    kk.storage = storage  # type: ignore[attr-defined]
    out, err = Pipe(), Pipe()
    st = logs(kk, args, out, err)
    out.close()
    err.close()
    return out.read_all(), err.read_all(), st


def test_run_options_in_a_childs_argv_reach_its_calls(k, tmp_path) -> None:
    """`map chat --max-tokens 2 …`: the options are chat's (after map's operand AGENT), and each child's calls
    honour them (the kernel parses a child's argv by the same declaration)."""
    sh = Sh(k, tmp_path)
    start = k.last_pid
    out, err, st = sh("printf 'one\\ntwo\\n' | map chat --max-tokens 2 --seed 1 'Repeat:'")
    assert st == 0, err
    children = [r for r in k.storage.query("SELECT pid, agent FROM processes WHERE run = ? AND pid > ?",
                                           (k.storage.run, start)) if r["agent"] == "chat"]
    assert len(children) == 2
    for c in children:
        calls = k.storage.query("SELECT tokens_out FROM syscalls WHERE run = ? AND pid = ? AND kind = 'llm'",
                                (k.storage.run, c["pid"]))
        assert calls and all(1 <= r["tokens_out"] <= 2 for r in calls), calls
