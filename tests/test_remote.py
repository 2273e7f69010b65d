"""Remote backends against real OpenAI-compatible servers: `python -m llama_cpp.server` on loopback serving the
embedded model, started by these tests with request interruption off. Agents run through them from the kernel
and from the shell; a replica killed mid-stream ends its agents with their error while the other replica takes
new requests; a cancelled agent's stream is closed and the server stops generating; start-up errors are one line."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiosh.kernel import Kernel
from aiosh.kernel.config import load_config
from aiosh.kernel.streams import Pipe

from tests.servers import ALIAS, LlamaServer, free_port

pytestmark = [pytest.mark.model, pytest.mark.timeout(180)]

AGENTS = str(Path(__file__).parent / "agents")


def backend(url: str, **kw) -> dict:
    return {"base_url": url, "model": ALIAS, "max_concurrent": 1, "retries": 1, "backoff_s": 0.2,
            "health_interval_s": 0.5, "timeout_s": 30.0, **kw}


def make_kernel(factory, cwd: Path, backends: dict, default: str = "local") -> Kernel:
    cfg = load_config(cwd=cwd, overrides={
        "kernel": {"slots": 2, "kv_cells": 4096, "backend": default}, "model": {"n_threads": 1},
        "plugins": {"paths": [AGENTS]}, "storage": {"path": ":memory:"}, "backends": backends,
    })
    return factory(cfg)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    d = tmp_path_factory.mktemp("servers")
    a, b = LlamaServer(d, "a"), LlamaServer(d, "b")
    try:
        a.wait_ready()
        b.wait_ready()
        yield a, b
    finally:
        a.stop()
        b.stop()


@pytest.fixture(scope="module")
def k(servers, tmp_path_factory, kernel_factory):
    a, b = servers
    kern = make_kernel(kernel_factory, tmp_path_factory.mktemp("cwd"), {"a": backend(a.url), "b": backend(b.url)})
    yield kern
    kern.shutdown()


def spawn(k: Kernel, agent: str, argv: list[str], **opts) -> tuple[int, Pipe, Pipe]:
    out, err = Pipe("out"), Pipe("err")
    pid = k.spawn(agent, argv, stdout=out, stderr=err, options=opts)
    return pid, out, err


def wait_tokens(k: Kernel, pid: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while k.proc(pid).tokens_out == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert k.proc(pid).tokens_out > 0


def wait_state(k: Kernel, pid: int, want: str, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while k.state(pid) != want and time.monotonic() < deadline:
        time.sleep(0.02)
    return k.state(pid) == want


def test_agents_run_on_both_replicas_with_counts_and_timings(k):
    assert k.warnings == []
    pids = [spawn(k, "chat", ["Name a colour."], backend=ALIAS, max_tokens=8, temperature=0)[0:2]
            for _ in range(2)]
    deadline = time.monotonic() + 60
    seen_running = set()
    while time.monotonic() < deadline and len(seen_running) < 2:
        for info in k.ps():
            if info.state == "R" and info.backend in ("a", "b"):
                seen_running.add(info.backend)
                assert info.kv_tokens is None and info.kv_bytes is None  # unknown, not zero
        if all(k.state(p) == "Z" for p, _ in pids):
            break
        time.sleep(0.01)
    for pid, out in pids:
        assert wait_state(k, pid, "Z")
        (rec,) = [r for r in k.syscalls(pid) if r.kind == "llm"]
        info = k.proc(pid)
        assert k.wait(pid, 60) == (pid, 0)
        assert out.read_all().strip()
        assert rec.outcome == "ok" and 0 < rec.tokens_out <= 8 and rec.tokens_in > 10
        assert rec.t_queued <= rec.t_started <= rec.t_first <= rec.t_finished
        assert (info.tokens_in, info.tokens_out) == (rec.tokens_in, rec.tokens_out) and info.decode_s > 0
    rows = {r.name: r for r in k.backends.stats()}
    assert rows["a"].requests == 1 and rows["b"].requests == 1  # least loaded: one each
    assert rows["a"].healthy and rows["b"].healthy and rows["a"].ttft_s is not None
    assert rows["local"].requests == 0


def test_a_grammar_constrained_tool_call_on_the_server(k):
    """react's tool choice is constrained by a GBNF grammar, which llama.cpp servers take in the request."""
    pid, out, err = spawn(k, "react", ["--tools", "calculator", "What is 12 times 7?"], backend="a", seed=1)
    assert wait_state(k, pid, "Z")
    tools = [r for r in k.syscalls(pid) if r.kind == "tool"]
    assert k.wait(pid, 60) == (pid, 0), err.read_all()
    assert tools and tools[0].outcome == "ok" and tools[0].detail.startswith('calculator {"expression": ')
    assert out.read_all().strip()


def test_the_default_backend_and_children_inherit_it(servers, tmp_path, kernel_factory):
    a, _ = servers
    kern = make_kernel(kernel_factory, tmp_path, {"a": backend(a.url)}, default="a")
    try:
        pid, out, _ = spawn(kern, "chat", ["Say yes."], max_tokens=4, temperature=0)
        assert wait_state(kern, pid, "Z")
        info = kern.proc(pid)
        assert (info.backend, info.kv_tokens, info.kv_bytes) == (ALIAS, None, None)
        assert kern.wait(pid, 60) == (pid, 0)
        assert [r.requests for r in kern.backends.stats()] == [0, 1]  # local, a
        parent, _, _ = spawn(kern, "parent", ["1", "1", "wait"], backend="local")
        deadline = time.monotonic() + 10
        while not [p for p in kern.ps() if p.ppid == parent] and time.monotonic() < deadline:
            time.sleep(0.02)
        (child,) = [p for p in kern.ps() if p.ppid == parent]
        assert (kern.proc(parent).backend, child.backend, child.kv_tokens) == ("local", "local", 0)
        assert kern.wait(parent, 30) == (parent, 0)
    finally:
        kern.shutdown()


def test_cancel_closes_the_stream_and_the_server_stops(servers, tmp_path, kernel_factory):
    a, _ = servers
    kern = make_kernel(kernel_factory, tmp_path, {"a": backend(a.url)})
    try:
        pid, _, _ = spawn(kern, "talker", ["1500"], backend="a")
        wait_tokens(kern, pid)
        kern.signal(pid, 15)
        assert kern.wait(pid, 30) == (pid, 143)
        t0 = time.monotonic()
        pid2, out, _ = spawn(kern, "talker", ["8"], backend="a")
        assert kern.wait(pid2, 60) == (pid2, 0)
        # The server runs one request at a time: had it gone on with the first one's 1500 tokens, the second
        # would have waited for them (tens of seconds on one thread).
        assert time.monotonic() - t0 < 10
        assert out.read_all()
        deadline = time.monotonic() + 10
        while "Disconnected from client" not in a.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "Disconnected from client" in a.log.read_text()
    finally:
        kern.shutdown()


def test_killing_a_replica_mid_stream(tmp_path, kernel_factory):
    c, d = LlamaServer(tmp_path, "c"), LlamaServer(tmp_path, "d")
    kern = None
    try:
        c.wait_ready()
        d.wait_ready()
        kern = make_kernel(kernel_factory, tmp_path, {"c": backend(c.url), "d": backend(d.url)}, default=ALIAS)
        talkers = [spawn(kern, "talker", ["300"]) for _ in range(2)]
        for pid, _, _ in talkers:
            wait_tokens(kern, pid)
        on = {kern.proc(pid).backend: (pid, out, err) for pid, out, err in talkers}
        assert set(on) == {"c", "d"}
        c.kill()
        pid_c, _, err_c = on["c"]
        assert kern.wait(pid_c, 30) == (pid_c, 1)
        line = err_c.read_all()
        assert line.startswith("aiosh: talker: llm: backend c: connection lost") and line.count("\n") == 1
        assert "tokens" in line
        pid_d = on["d"][0]
        assert kern.state(pid_d) in ("R", "S")  # the other replica's agent carries on
        rows = {r.name: r for r in kern.backends.stats()}
        assert not rows["c"].healthy and rows["d"].healthy
        new, out, _ = spawn(kern, "talker", ["6"])
        assert kern.wait(pid_d, 60) == (pid_d, 0)
        assert kern.wait(new, 60) == (new, 0) and out.read_all()
        rows = {r.name: r for r in kern.backends.stats()}
        assert rows["d"].requests == 2 and rows["c"].requests == 1 and rows["c"].errors == 1
    finally:
        if kern is not None:
            kern.shutdown()
        c.stop()
        d.stop()


# --- from the shell -------------------------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path):
    e = dict(os.environ)
    e["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    e["XDG_DATA_HOME"] = str(tmp_path / "data")
    e.pop("AIOSH_TEST_MISSING_KEY", None)
    return e


def aiosh(cmd: str, config: str, env: dict, cwd: Path, timeout: float = 120):
    (cwd / "remote.toml").write_text(config)
    return subprocess.run([sys.executable, "-m", "aiosh.cli", "--config", "remote.toml", "-c", cmd],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def toml_backend(name: str, url: str, **kw) -> str:
    extra = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in kw.items())
    return f'[backends.{name}]\nbase_url = "{url}"\nmodel = "{ALIAS}"\nmax_concurrent = 1\n{extra}'


def test_shell_runs_agents_through_a_remote_backend(servers, env, tmp_path):
    a, b = servers
    cfg = "[model]\nn_threads = 1\n" + toml_backend("a", a.url) + toml_backend("b", b.url)
    r = aiosh(f"chat --backend {ALIAS} --max-tokens 6 --temperature 0 'Say hi' & "
              "chat --backend b --max-tokens 6 --temperature 0 'Say hi'; wait; echo status=$?; "
              "chat --backend nope hi; echo status=$?", cfg, env, tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("status=") == 2 and "status=0" in r.stdout and r.stdout.rstrip().endswith("status=2")
    assert r.stderr == f"aiosh: line 1: chat: --backend: no such backend 'nope' (known: local, a, b, {ALIAS})\n"


def test_start_up_errors_are_one_line(env, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    r = aiosh("true", toml_backend("x", dead), env, tmp_path)
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == f"aiosh: backend x ({dead}): connection refused\n"
    r = aiosh("true", toml_backend("x", "gpu1:8080"), env, tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "[backends.x] base_url: must be an http:// or https:// URL with a host" in r.stderr
    r = aiosh("true", toml_backend("x", dead, api_key_env="AIOSH_TEST_MISSING_KEY"), env, tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert r.stderr.endswith("[backends.x] api_key_env: environment variable AIOSH_TEST_MISSING_KEY is not set\n")
    r = aiosh("true", '[backends.x]\nmodel = "m"\n', env, tmp_path)
    assert r.returncode == 2 and "[backends.x] base_url: required" in r.stderr and r.stderr.count("\n") == 1
    r = aiosh("true", '[kernel]\nbackend = "gpu"\n', env, tmp_path)
    assert r.returncode == 2 and "[kernel] backend: no such backend 'gpu' (known: local)" in r.stderr
