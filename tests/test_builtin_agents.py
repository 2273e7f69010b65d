"""The built-in agents summarize, react and map on the real model: react's grammar-constrained tool call reaches
the kernel and its result the model; map's family of children (PPID, process group, kill -- -PGID)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
from aiosh.kernel.streams import Pipe
from aiosh.plugins.agents.summarize import _chunks

pytestmark = [pytest.mark.timeout(120)]

AGENTS = textwrap.dedent('''
    from aiosh.kernel.agent import agent

    @agent("say", description="say N WORD: waits (0.5 - N/10) s, then prints WORD; fails for WORD 'bad'")
    async def say(ctx):
        n, word = int(ctx.argv[0]), ctx.argv[-1]
        await ctx.sleep(max(0.0, 0.5 - n / 10))
        if word == "bad":
            ctx.stderr.write("say: bad word\\n")
            return 3
        ctx.print(word)
        return 0
''')


def test_chunks_cut_at_boundaries():
    text = ("A sentence here. " * 30 + "\n\n") * 5
    pieces = _chunks(text, 600)
    assert all(len(p) <= 600 for p in pieces) and len(pieces) >= 4
    assert " ".join(pieces).split() == text.split()  # nothing lost
    assert _chunks("short", 600) == ["short"]


@pytest.fixture(scope="module")
def bk(tmp_path_factory, kernel_factory):
    from aiosh.kernel.config import load_config

    tmp = tmp_path_factory.mktemp("agentsk")
    (tmp / "plugins").mkdir()
    (tmp / "plugins" / "bagents.py").write_text(AGENTS)
    (tmp / "work").mkdir()
    cfg = load_config(cwd=tmp, overrides={
        "kernel": {"slots": 4, "kv_cells": 8192}, "model": {"n_ctx": 2048, "n_threads": 1},
        "storage": {"path": str(tmp / "k.db")}, "plugins": {"paths": [str(tmp / "plugins")]},
    })
    k = kernel_factory(cfg)
    k.test_cwd = str(tmp / "work")
    yield k
    k.shutdown()


def run(k, agent: str, *argv: str, stdin: str | None = None, timeout: float = 90, options: dict | None = None):
    out, err = Pipe(), Pipe()
    inp = None
    if stdin is not None:
        inp = Pipe()
        inp.write(stdin)
        inp.close()
    pid = k.spawn(agent, list(argv), stdin=inp, stdout=out, stderr=err, cwd=k.test_cwd, options=options or {})
    got = k.wait(pid, timeout)
    assert got is not None, f"{agent} {argv} did not end"
    return got[1], out.read_all(), err.read_all(), pid


def syscalls(k, pid: int) -> list[dict]:
    return k.storage.query("SELECT kind, detail, outcome, tokens_in FROM syscalls WHERE run = ? AND pid = ? "
                           "ORDER BY t_queued, id", (k.storage.run, pid))


# --- react --------------------------------------------------------------------------------------------------------

@pytest.mark.model
def test_react_calls_the_calculator_and_the_result_reaches_the_model(bk):
    status, out, err, pid = run(bk, "react", "--tools", "calculator", "What is 12 times 7?", options={"seed": 1})
    assert status == 0, err
    assert err.startswith("[1] calculator({\"expression\": ")  # the call, then its result
    calls = syscalls(bk, pid)
    tools = [c for c in calls if c["kind"] == "tool"]
    assert tools and tools[0]["outcome"] == "ok" and tools[0]["detail"].startswith('calculator {"expression": ')
    expression = json.loads(tools[0]["detail"].split(" ", 1)[1])["expression"]
    from aiosh.plugins.tools.calculator import evaluate

    result = evaluate(expression)
    assert f"    -> {result}\n" in err
    llm = [c for c in calls if c["kind"] == "llm"]
    assert len(llm) >= 2
    first_tool = calls.index(tools[0])
    after = [c for c in calls[first_tool:] if c["kind"] == "llm"]
    assert after[0]["detail"].startswith(f"calculator returned: {result}\n")  # the next prompt carries it
    rows = bk.storage.query("SELECT content FROM messages WHERE run = ? AND pid = ? AND role = 'user' ORDER BY id",
                            (bk.storage.run, pid))
    assert any(r["content"].startswith(f"calculator returned: {result}") for r in rows)
    assert out.strip()  # an answer (whatever a 135M model makes of it)


@pytest.mark.model
def test_react_step_limit_usage_and_denied_tools(bk):
    status, out, err, pid = run(bk, "react", "--max-steps", "1", "--tools", "calculator", "What is 2 plus 2?")
    assert status == 0 and err.count("[1] calculator(") == 1 and "[2]" not in err and out.strip()
    assert sum(1 for c in syscalls(bk, pid) if c["kind"] == "llm") == 2  # one step, then the forced answer
    assert run(bk, "react")[0:3:2] == (2, "react: no question (usage: react [--max-steps N] [--tools NAME,...] "
                                          "QUESTION...)\n")
    assert run(bk, "react", "--max-steps", "0", "x")[2] == "react: --max-steps: invalid number '0'\n"
    status, _, err, _ = run(bk, "react", "--tools", "nosuch", "x")
    assert (status, err) == (1, "react: nosuch: no such tool\n")
    # a tool the run does not allow is never offered: the model can only answer
    status, out, err, pid = run(bk, "react", "--tools", "calculator", "What is 2 plus 2?",
                                options={"allow": ["tool:clock"], "max_tokens": 40})
    assert status == 0 and "[1]" not in err and not [c for c in syscalls(bk, pid) if c["kind"] == "tool"]


# --- summarize ----------------------------------------------------------------------------------------------------

@pytest.mark.model
def test_summarize_streams_a_summary(bk):
    text = ("The council met on Tuesday. It approved the new bridge over the river, which will cost 4 million "
            "euros and open in 2026. The mayor thanked the engineers.\n")
    status, out, err, pid = run(bk, "summarize", "--words", "20", stdin=text, options={"temperature": 0})
    assert status == 0 and out.strip() and out.endswith("\n"), err
    assert [c["kind"] for c in syscalls(bk, pid)] == ["llm"]
    assert run(bk, "summarize", stdin="")[0:3:2] == (2, "summarize: nothing to summarise on standard input (usage: "
                                                        "summarize [--words N] [INSTRUCTIONS...] < TEXT)\n")
    assert run(bk, "summarize", "--words", "x", stdin="a")[2] == "summarize: --words: invalid number 'x'\n"


@pytest.mark.model
def test_summarize_long_input_in_chunks(bk):
    para = "Item {i}: the warehouse in district {i} reported {n} crates of apples delivered on time.\n"
    text = "".join(para.format(i=i, n=i * 7) for i in range(45))  # about 3900 characters: two chunks
    status, out, err, pid = run(bk, "summarize", stdin=text, options={"temperature": 0, "max_tokens": 24})
    assert status == 0 and out.strip(), err
    llm = [c for c in syscalls(bk, pid) if c["kind"] == "llm"]
    assert len(llm) == len(_chunks(text, 3000)) + 1  # one note per chunk, then the summary of the notes


# --- map ----------------------------------------------------------------------------------------------------------

@pytest.mark.model
def test_map_runs_children_in_parallel_in_input_order(bk):
    t0 = time.monotonic()
    status, out, err, pid = run(bk, "map", "say", "0", stdin="one\ntwo\n\nthree\nfour\nfive\n")
    assert (status, out, err) == (0, "one\ntwo\nthree\nfour\nfive\n", "")
    assert time.monotonic() - t0 < 2.0  # five 0.5 s children at once, not one after another
    spawns = [c for c in syscalls(bk, pid) if c["kind"] == "spawn"]
    assert [c["detail"] for c in spawns] == [f"say 0 {w}" for w in ("one", "two", "three", "four", "five")]
    status, out, err, _ = run(bk, "map", "say", "0", stdin="a\nbad\nc\n")
    assert (status, out, err) == (1, "a\nc\n", "say: bad word\n")
    status, out, err, _ = run(bk, "map", "-j", "1", "say", "0", stdin="x\ny\n")
    assert (status, out) == (0, "x\ny\n")
    assert run(bk, "map", stdin="x\n")[0:3:2] == (2, "map: missing AGENT (usage: map [-j N] AGENT [ARGS...] < LINES)\n")
    status, _, err, _ = run(bk, "map", "nosuch", stdin="x\n")
    assert status == 1 and err == "map: nosuch: nosuch: no such agent\n"
    status, _, err, pid = run(bk, "map", "say", "0", stdin="x\n", options={"deny": ["spawn"]})
    assert status == 126 and err.startswith(f"aiosh: map[{pid}]: permission denied: spawn")


def _children(k, pid: int, n: int, timeout: float = 10) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = [p for p in k.ps() if p.ppid == pid]
        if len(kids) >= n:
            return kids
        time.sleep(0.02)
    return [p for p in k.ps() if p.ppid == pid]


@pytest.mark.model
def test_map_family_killed_through_the_shell(bk):
    from aiosh.session import make_shell

    inp = Pipe()
    inp.write("30\n30\n30\n30\n30\n")
    inp.close()
    pid = bk.spawn("map", ["sleep"], stdin=inp, cwd=bk.test_cwd)
    kids = _children(bk, pid, 5)
    assert len(kids) == 5
    assert all(p.ppid == pid and p.pgid == pid and p.agent == "sleep" and p.argv == ("30",) for p in kids)
    out, err = Pipe(), Pipe()
    sh = make_shell(bk, bk.config, stdout=out, stderr=err, stdin=None, interactive=False)
    assert sh.run_source(f"kill -- -{pid}", filename="-c") == 0
    assert bk.wait(pid, 10) == (pid, 143)
    deadline = time.monotonic() + 5
    while any(p.pgid == pid for p in bk.ps()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [p for p in bk.ps() if p.pgid == pid] == []


@pytest.mark.model
def test_map_and_kill_from_aiosh_dash_c(tmp_path):
    env = dict(os.environ)
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    (tmp_path / "aiosh.toml").write_text('[model]\nn_threads = 1\n[kernel]\nslots = 2\nkv_cells = 2048\n')
    script = ("printf '20\\n20\\n20\\n20\\n20\\n' | map sleep &\n"
              "sleep 0.5\n"
              "ps | grep -c ' sleep '\n"
              "kill -- -$!\n"
              "wait $!; echo \"status $?\"\n"
              "sleep 0.2; ps | grep -c ' sleep '\n")
    r = subprocess.run([sys.executable, "-m", "aiosh.cli", "-c", script], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=90)
    assert r.stdout.split("\n")[:3] == ["5", "status 143", "0"], (r.stdout, r.stderr)
