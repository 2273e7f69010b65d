"""MCP servers as tools: a small server written with the SDK (tests/mcp_server.py), over stdio and streamable
HTTP, its tools listed and called by an agent and by react (the real model), capabilities, a crash, a timeout."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiosh.kernel.config import load_config
from aiosh.kernel.kernel import Kernel
from aiosh.kernel.streams import Pipe

from aiosh.commands.tools import tools as tools_command
from aiosh.monitor.backends_panel import render_backends
from aiosh.monitor.collector import mcp_row

SERVER = str(Path(__file__).parent / "mcp_server.py")
pytestmark = [pytest.mark.timeout(300)]

AGENT = '''
import json
from aiosh.api import agent
from aiosh.kernel.tools import ToolError


@agent("mcpcall", description="call one tool: mcpcall NAME JSON-ARGS")
async def main(ctx):
    try:
        value = await ctx.tool(ctx.argv[0], **json.loads(ctx.argv[1]))
    except ToolError as exc:
        ctx.stderr.write(f"ToolError: {exc}\\n")
        return 1
    ctx.stdout.write(json.dumps(value) + "\\n")
    return 0
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def http_server():
    port = free_port()
    proc = subprocess.Popen([sys.executable, SERVER, "http", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("the MCP HTTP server did not start")
    yield f"http://127.0.0.1:{port}/mcp"
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def k(tmp_path_factory, http_server, kernel_factory):
    root = tmp_path_factory.mktemp("mcp")
    (root / "plugins").mkdir()
    (root / "plugins" / "mcpcall.py").write_text(AGENT)
    cfg = load_config(cwd=root, overrides={
        "kernel": {"slots": 2, "kv_cells": 4096},
        "storage": {"path": ":memory:"},
        "plugins": {"paths": [str(root / "plugins")]},
        "access": {"allow": ["tool:calculator", "tool:t.add", "tool:t.slow", "tool:t.crash", "tool:t.fail",
                             "tool:t.wipe", "tool:h.*"]},
        "mcp": {"t": {"command": [sys.executable, SERVER], "timeout_s": 3.0},
                "h": {"url": http_server, "timeout_s": 10.0}},
    })
    kern = kernel_factory(cfg)
    yield kern
    kern.shutdown()


def run(k: Kernel, agent: str, argv: list[str], **opts) -> tuple[int, str, str]:
    out, err = Pipe("out"), Pipe("err")
    pid = k.spawn(agent, argv, stdout=out, stderr=err, options=opts)
    got = k.wait(pid, timeout=240)
    assert got is not None, f"{agent} {argv} did not end"
    return got[1], out.read_all(), err.read_all()


def test_tools_are_listed_with_their_schemas_and_servers(k):
    specs = k.tool_types()
    for name in ("t.add", "t.shout", "t.slow", "t.crash", "t.wipe", "h.add"):
        assert name in specs, sorted(specs)
    assert specs["t.add"].parameters["required"] == ["a", "b"] and specs["t.add"].description == "Add two integers."
    assert specs["t.wipe"].irreversible and not specs["t.add"].irreversible  # destructiveHint
    text = tools_command(k, [])
    assert "t.add(a: integer, b: integer)" in text and "t.wipe(name: string)  [irreversible]" in text
    assert "mcp server t: running, 6 tools" in text and "mcp server h: running, 6 tools" in text
    # the monitor's backends panel has a row per server
    rows = render_backends([mcp_row(m) for m in k.snapshot().mcp]).plain
    assert "mcp:t" in rows and "mcp:h" in rows and "6 tools, running" in rows


def test_an_agent_calls_stdio_and_http_tools(k):
    assert run(k, "mcpcall", ["t.add", '{"a": 2, "b": 40}']) == (0, "42\n", "")
    assert run(k, "mcpcall", ["h.shout", '{"text": "over http"}']) == (0, '"OVER HTTP"\n', "")
    status, _, err = run(k, "mcpcall", ["t.add", '{"a": "x", "b": 1}'])
    assert status == 1 and err.startswith("ToolError: t.add: a: expected an integer") and err.count("\n") == 1
    status, _, err = run(k, "mcpcall", ["t.fail", "{}"])
    assert status == 1 and err.startswith("ToolError: t.fail: ") and err.count("\n") == 1


def test_refused_without_the_capability(k):
    status, _, err = run(k, "mcpcall", ["t.shout", '{"text": "x"}'])
    assert status == 126 and "tool:t.shout" in err
    status, _, err = run(k, "mcpcall", ["h.add", '{"a": 1, "b": 1}'], deny=["tool:h.*"])
    assert status == 126 and "tool:h.add" in err
    rows = k.access.recent(50)
    assert any(r["capability"] == "tool:t.shout" and r["decision"] == "deny" for r in rows)


def test_a_destructive_tool_asks_and_is_refused_without_an_answer(k):
    status, _, err = run(k, "mcpcall", ["t.wipe", '{"name": "r1"}'])
    assert status == 126 and "not confirmed" in err
    assert run(k, "mcpcall", ["t.wipe", '{"name": "r1"}'], yes=True) == (0, '"wiped r1"\n', "")


def test_a_crashing_server_is_one_line_then_restarted(k):
    status, _, err = run(k, "mcpcall", ["t.crash", "{}"])
    assert status == 1 and err.count("\n") == 1 and "t.crash: mcp server t" in err, err
    assert run(k, "mcpcall", ["t.add", '{"a": 1, "b": 1}']) == (0, "2\n", "")
    state = {s.name: s for s in k.mcp.states()}["t"]
    assert state.state == "running" and state.restarts >= 1


def test_a_slow_tool_hits_its_timeout_and_the_kernel_goes_on(k):
    t0 = time.monotonic()
    status, _, err = run(k, "mcpcall", ["t.slow", '{"seconds": 30}'])
    assert status == 1 and "t.slow: timed out after 3 s" in err and time.monotonic() - t0 < 25
    assert run(k, "mcpcall", ["t.add", '{"a": 5, "b": 5}']) == (0, "10\n", "")


@pytest.mark.model
def test_react_calls_an_mcp_tool_chosen_under_the_grammar(k):
    status, out, err = run(k, "react", ["--max-steps", "1", "--tools", "t.add", "What is 17 plus 25?"],
                           max_tokens=64)
    call = re.search(r"\[1\] t\.add\((\{.*\})\)\n\s+-> (.*)\n", err)
    assert call is not None and status == 0, err
    args = json.loads(call.group(1))
    assert call.group(2) == str(args["a"] + args["b"])  # the server's own answer came back as the observation
    assert out.strip()
