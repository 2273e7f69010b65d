"""The OpenAI-compatible door, with the real model: unchanged OpenAI-SDK programs (tests/door_client.py) as aiosh
processes — from `aiosh -c`, and from a shell on one kernel shared by the module — plus the request checks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiosh.kernel.config import load_config
from aiosh.kernel.door.translate import DoorError, chat_call, completion_call
from aiosh.kernel.kernel import Kernel
from aiosh.kernel.streams import Pipe

from aiosh.session import make_shell

CLIENT = str(Path(__file__).parent / "door_client.py")
pytestmark = [pytest.mark.timeout(300)]


# ── request checks (no model) ───────────────────────────────────────────────────────────────────────────────

def test_unsupported_fields_and_values_are_a_400_that_names_them():
    base = {"model": "local", "messages": [{"role": "user", "content": "hi"}]}
    for extra, word in [({"n": 2}, "'n'"), ({"logit_bias": {"1": 2}}, "logit_bias"), ({"top_logprobs": 2}, "top_logprobs"),
                        ({"presence_penalty": 0.5}, "presence_penalty"), ({"stream_options": {"include_usage": True}},
                                                                           "stream_options"),
                        ({"temperature": 3}, "temperature"), ({"max_tokens": 0}, "max_tokens"),
                        ({"response_format": {"type": "xml"}}, "response_format"),
                        ({"tool_choice": "required"}, "tool_choice")]:
        with pytest.raises(DoorError) as exc:
            chat_call({**base, **extra})
        assert exc.value.status == 400 and word in exc.value.message, (extra, exc.value.message)
    with pytest.raises(DoorError, match="image_url"):
        chat_call({"model": "local", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]})
    with pytest.raises(DoorError, match="suffix"):
        completion_call({"model": "local", "prompt": "a", "suffix": "b"})
    ok = chat_call({**base, "n": 1, "stop": "x", "seed": 3, "temperature": 0, "max_completion_tokens": 5,
                    "stream": True, "stream_options": {"include_usage": True}})
    assert ok.opts == {"stop": ["x"], "seed": 3, "temperature": 0.0, "max_tokens": 5} and ok.include_usage


def test_tool_calls_and_results_become_turns_the_model_was_shown():
    call = chat_call({"model": "local", "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "rain"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]})
    assert call.messages[0]["role"] == "system" and "get_weather(city: string)" in call.messages[0]["content"]
    assert call.messages[2] == {"role": "assistant", "content": '{"tool": "get_weather", "args": {"city": "Oslo"}}'}
    assert call.messages[3] == {"role": "user", "content": "get_weather returned: rain"}
    assert "get_weather" in call.opts["grammar"] and call.answer


# ── end to end from aiosh -c ────────────────────────────────────────────────────────────────────────────────

@pytest.fixture
def env(tmp_path):
    e = dict(os.environ)
    e["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    e["XDG_DATA_HOME"] = str(tmp_path / "data")
    e["PYTHONUNBUFFERED"] = "1"
    for var in ("OPENAI_BASE_URL", "OPENAI_API_BASE", "OPENAI_API_KEY"):
        e.pop(var, None)
    return e


@pytest.mark.model
@pytest.mark.timeout(600)  # nine model calls and eight interpreter start-ups in one aiosh run
def test_an_unchanged_sdk_program_from_aiosh_c(env, tmp_path):
    """Streamed and not, its tokens in ps (while it runs) and last (after); a bad key gets 401; an unknown model
    404 with the known names; an unsupported field 400."""
    script = f"""
python {CLIENT} plain,stream,badkey,unknown-model,unsupported,models,completion
python {CLIENT} hold &
while [ ! -f called ]; do sleep 0.1; done
ps -o pid,tout,stat,cmd
touch release
wait
audit -n 200
last -n 1000
"""
    r = subprocess.run([sys.executable, "-m", "aiosh.cli", "-c", script], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=560)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    plain, stream = json.loads(lines[0]), json.loads(lines[1])
    assert plain["usage"]["completion_tokens"] == 12 and plain["finish"] == "length" and plain["text"]
    assert stream["usage"]["completion_tokens"] == 12 and stream["chunks"] >= 6 and stream["finish"] == "length"
    assert stream["text"] == plain["text"]  # greedy, same seed: the same reply either way
    assert lines[2] == "401 401"
    assert lines[3].startswith("404 ") and "known: default, local" in lines[3]
    assert lines[4].startswith("400 ") and "'n'" in lines[4]
    assert json.loads(lines[5]) == ["default", "local"]
    completion = json.loads(lines[6])
    assert 1 <= completion["usage"] <= 4 and completion["text"] and "\n" not in completion["text"]
    assert lines[7] == "called 8"
    audit = [ln for ln in lines if " door " in f" {ln} "]
    assert any(" deny " in ln and "API key" in ln for ln in audit), r.stdout  # the bad key, audited
    assert any(" allow " in ln and "chat.completions model=local" in ln for ln in audit), r.stdout
    ps_rows = [ln for ln in lines if "door_client.py hold" in ln and not ln.startswith("1:")]
    assert ps_rows and ps_rows[0].split()[1] == "8", r.stdout  # TOUT of the host process while it runs
    last_rows = [ln.split() for ln in lines[lines.index(next(x for x in lines if x.startswith("RUN:PID  STATUS"))):]
                 if ln.endswith(f"{CLIENT} hold")]
    assert last_rows and last_rows[0][1] == "0" and last_rows[0][-4] == "8", r.stdout  # status, OUT


# ── a shell on one kernel (the module's) ────────────────────────────────────────────────────────────────────

@pytest.fixture(scope="module")
def k(tmp_path_factory, kernel_factory):
    root = tmp_path_factory.mktemp("door")
    cfg = load_config(cwd=root, overrides={"kernel": {"slots": 4, "kv_cells": 8192, "max_batch": 1},
                                           "storage": {"path": str(root / "aiosh.db")}})
    kern = kernel_factory(cfg)
    yield kern
    kern.shutdown()


class ShellRun:
    """A shell on the shared kernel, with its own working folder; output collected."""

    def __init__(self, k: Kernel, cwd: Path) -> None:
        self.out, self.err = Pipe("stdout"), Pipe("stderr")
        self.sh = make_shell(k, k.config, stdout=self.out, stderr=self.err, stdin=None, interactive=False)
        self.sh.run_line(f"cd {cwd}")
        self.cwd = cwd

    def run(self, line: str) -> int:
        return self.sh.run_line(line)


def host_pids(k: Kernel, word: str) -> list[int]:
    return [p.pid for p in k.ps() if p.agent == "python" and word in p.argv and p.status is None]


def wait_for(cond, timeout: float = 120.0, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(step)
    raise AssertionError("timed out waiting")


@pytest.mark.model
def test_a_program_that_ended_is_gone_from_ps_at_once(k, tmp_path):
    # as in bash: once the shell has seen the program end, its kernel process is gone too (it lingered as S)
    s = ShellRun(k, tmp_path)
    for _ in range(5):
        assert s.run("/bin/true | cat; ps -o pid,cmd") == 0
        rows = (s.out.read(5) or "").splitlines()
        assert not [r for r in rows if r.endswith(("/bin/true", "cat"))], rows


@pytest.mark.model
def test_function_calling_returns_a_valid_call(k, tmp_path):
    s = ShellRun(k, tmp_path)
    assert s.run(f"python {CLIENT} tools,json > out.txt") == 0, s.err.read_all()
    tools, js = [json.loads(x) for x in (tmp_path / "out.txt").read_text().splitlines()]
    assert tools["finish"] == "tool_calls" and len(tools["calls"]) == 1
    call = tools["calls"][0]
    assert call["name"] == "get_weather" and set(call["arguments"]) == {"city"} and call["arguments"]["city"]
    assert set(js["data"]) == {"name", "age"} and isinstance(js["data"]["age"], int)
    assert k.door.url.startswith("http://127.0.0.1:")  # loopback only


@pytest.mark.model
def test_kill_mid_stream_closes_the_stream_and_frees_the_slot(k, tmp_path):
    s = ShellRun(k, tmp_path)
    assert s.run(f"python {CLIENT} long 2000 streaming > long.txt &") == 0
    wait_for(lambda: (tmp_path / "streaming").exists())
    pid = wait_for(lambda: host_pids(k, "long"))[0]
    assert any(q.owner == pid for q in k.local.stats.seqs)
    assert s.run("kill %1") == 0
    s.run("wait")
    wait_for(lambda: not any(q.owner == pid for q in k.local.stats.seqs), timeout=10)
    recs = [r for r in k.storage.query("SELECT outcome, tokens_out FROM syscalls WHERE pid = ? AND run = ?",
                                       (pid, k.storage.run))]
    assert recs and recs[-1]["outcome"] in ("cancelled", "interrupted"), recs
    out = (tmp_path / "long.txt").read_text()
    assert "done" not in out  # the program was killed mid-stream


@pytest.mark.model
def test_a_stopped_programs_stream_pauses_and_resumes(k, tmp_path):
    s = ShellRun(k, tmp_path)
    assert s.run(f"python {CLIENT} long 30 streaming > long.txt &") == 0
    wait_for(lambda: (tmp_path / "streaming").exists())
    pid = wait_for(lambda: host_pids(k, "long"))[0]
    assert s.run("kill -STOP %1") == 0
    wait_for(lambda: k.state(pid) == "T", timeout=10)
    time.sleep(1.0)  # a step already under way when the signal came may still deliver its token
    held = k.proc(pid).tokens_out
    time.sleep(2.0)
    assert k.proc(pid).tokens_out == held  # no tokens while stopped
    assert held < 30
    assert s.run("kill -CONT %1") == 0
    assert s.run("wait %1") == 0
    out = (tmp_path / "long.txt").read_text().splitlines()
    assert out[-1] == "done 30", out[-3:]  # every token came, after the pause


@pytest.mark.model
def test_two_programs_at_different_nice_get_tokens_in_the_cfs_ratio(k, tmp_path):
    """nice 0 against nice 5: CFS weights 1024 and 335, a 3.06 ratio while both decode."""
    s = ShellRun(k, tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert s.run(f"cd a; python {CLIENT} long 3000 go > out.txt & cd ..") == 0
    assert s.run(f"cd b; nice -n 5 python {CLIENT} long 3000 go > out.txt & cd ..") == 0
    wait_for(lambda: (tmp_path / "a" / "go").exists() and (tmp_path / "b" / "go").exists())
    fast = wait_for(lambda: [p.pid for p in k.ps() if p.agent == "python" and p.nice == 0 and p.status is None])[0]
    slow = wait_for(lambda: [p.pid for p in k.ps() if p.agent == "python" and p.nice == 5 and p.status is None])[0]
    a0, b0 = k.proc(fast).tokens_out, k.proc(slow).tokens_out
    # Count over 40 tokens decoded while both stream (one batch place: kernel.max_batch = 1, so they compete).
    wait_for(lambda: k.proc(fast).tokens_out - a0 + k.proc(slow).tokens_out - b0 >= 40, timeout=240, step=0.02)
    a1, b1 = k.proc(fast).tokens_out, k.proc(slow).tokens_out
    s.run("kill %1 %2")
    s.run("wait")
    ratio = (a1 - a0) / max(1, b1 - b0)
    assert b1 - b0 > 0 and 2.0 < ratio < 4.5, (a1 - a0, b1 - b0, ratio)
