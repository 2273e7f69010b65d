"""The engine in its own process, on the real model: a crash is an error for the calls in flight, not the end of
aiosh; the engine dies with aiosh; bad grammars and limits are one line; a Ctrl-C leaves the engine alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiosh.kernel import Kernel
from aiosh.kernel.config import load_config
from aiosh.kernel.engine_client import signal_name
from aiosh.kernel.engine_process import TEST_CRASH_ENV
from aiosh.kernel.grammar_check import check_grammar_text, empty_classes, grammar_problems
from aiosh.kernel.model_info import find_embedded_model, read_gguf_facts
from aiosh.kernel.requests import EngineError, GenRequest
from aiosh.kernel.streams import Pipe

AGENTS = str(Path(__file__).parent / "agents")
CRASH_LINE = "engine crashed (SIGSEGV); restarting"


# --- without a model ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("grammar, empty", [
    ("root ::= [b-a]", ["[b-a]"]),
    ('root ::= "[b-a]" [a-z]  # [z-a] in a comment', []),
    ("root ::= []", ["[]"]),
    (r"root ::= [\x41-\x40] | [a-zA-Z0-9_-]", [r"[\x41-\x40]"]),
    (r"root ::= [\[\]] [^\n]", []),
])
def test_empty_character_classes_are_found(grammar, empty):
    assert empty_classes(grammar) == empty


@pytest.mark.parametrize("grammar, problem", [
    ("root ::= [b-a]", "character class [b-a] is empty or has an empty range"),
    (r"root ::= [^\x00-\U0010FFFF]", r"character class [^\x00-\U0010FFFF] matches no character"),
    (r'root ::= "a" "\x00"', r'"\x00" holds a NUL character, which no token can hold'),
    (r"root ::= [\x00]", r"[\x00] matches only a NUL character, which no token can hold"),
    ('root ::= "x"{3,2}', "repetition {3,2} has a minimum above its maximum"),  # llama.cpp's parser loops for ever
    ('root ::= a\na ::= "x" a', "no string matches it: rules a, root can never end"),
    ('root ::= ("x" root)', "no string matches it: rule root can never end"),
    ("root ::= a | b\na ::= b [0-9]\nb ::= a", "no string matches it: rules a, b, root can never end"),
])
def test_grammars_llama_cpp_cannot_run_are_found(grammar, problem):
    assert grammar_problems(grammar)[0] == problem


@pytest.mark.parametrize("grammar", [
    'root ::= "yes" | "no"', 'root ::= ""', 'root ::= ("x" root) | "y"', r"root ::= [^\n]* [\x00-\x10]",
    'root ::= item+\nitem ::= [a-z]+ " "?  # comment\n', 'root ::= (\n  "a" |\n  "b"\n)', 'root ::= "x"{0} [a-z]{2,}',
    'root ::= "{" ws "\\"answer\\"" ws ":" ws value ws "}"\nvalue ::= "true" | [0-9]\nws ::= " "?',
    'root ::= "[b-a]" [a-z]  # [z-a] in a comment',
])
def test_runnable_grammars_pass(grammar):
    assert grammar_problems(grammar) == []


def test_a_grammar_that_cannot_match_is_one_line():
    with pytest.raises(EngineError) as info:
        check_grammar_text("root ::= [b-a]")
    assert str(info.value) == "invalid grammar: character class [b-a] is empty or has an empty range"


def test_the_gguf_header_is_read_without_llama_cpp():
    facts = read_gguf_facts(find_embedded_model())
    assert (facts.architecture, facts.n_ctx_train, facts.n_layer, facts.n_vocab) == ("llama", 8192, 30, 49152)
    assert facts.kv_bytes_per_token == 2 * 30 * 3 * (576 // 9) * 2


def test_signal_names():
    assert (signal_name(-11), signal_name(-9), signal_name(3)) == ("SIGSEGV", "SIGKILL", "exit 3")


def _aiosh(args, tmp_path, env_extra=None, timeout=120):
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "c"), XDG_DATA_HOME=str(tmp_path / "d"),
               XDG_STATE_HOME=str(tmp_path / "s"), **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "aiosh.cli", *args], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("toml, key", [
    ("[kernel]\nbatch_tokens = 1000000000\n", "[kernel] batch_tokens"),
    ("[kernel]\nkv_cells = 1000000000\n", "[kernel] kv_cells"),
])
def test_limits_beyond_the_window_slots_or_memory_are_one_line(tmp_path, toml, key):
    (tmp_path / "aiosh.toml").write_text(toml)
    r = _aiosh(["-c", "echo never"], tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and key in r.stderr and "aiosh: " in r.stderr


def test_a_command_without_llm_calls_starts_no_engine(tmp_path):
    r = _aiosh(["-c", "echo hi; sleep 0.1; ps; sched"], tmp_path)
    assert (r.returncode, r.stdout.splitlines()[0]) == (0, "hi")
    assert "engine: stopped  pid: -" in r.stdout  # no engine process was ever started


def test_a_script_that_names_a_model_agent_starts_the_engine_early(tmp_path):
    # `chat` never runs here, but the script names it: the engine loads while the shell works (no first-call wait)
    r = _aiosh(["-c", "sched; false && chat never"], tmp_path)
    assert r.returncode == 1
    assert "engine: starting" in r.stdout, r.stdout


@pytest.mark.parametrize("script, unknown", [
    ("echo hi", set()),
    ("ls | wc -l; sleep 0.1", set()),  # programs on PATH
    ("ps; sched; free; top; logs 1", set()),  # the kernel-aware builtins
    ("chat hi", {"chat"}),
    ("f(){ chat x; }; f", {"chat"}),  # a function's body counts; its name does not
    ("x=$(map a b); echo $x", {"map"}),  # so does a command substitution
    ("for i in 1 2; do summarize; done", {"summarize"}),
    ("$cmd hi; 'chat' x", {"chat"}),  # a name known only when it runs is no guess
    ("if then", set()),  # does not parse: the kernel decides alone
])
def test_the_guess_that_starts_the_engine_before_the_kernel(script, unknown):
    from aiosh.prestart import unknown_commands

    assert unknown_commands(script) == unknown


def test_a_wrong_guess_ends_the_early_engine_before_it_loads(tmp_path):
    # `nosuchcmd` may be an agent: the engine's process starts with aiosh; the kernel, started to look the name up,
    # finds no agent that calls the model and ends that process at once: none is left while the script runs
    r = _aiosh(["-c", "nosuchcmd 2>/dev/null; echo s=$?; sched | grep '^engine:'; "
                      "pgrep -P $$ -f aiosh.kernel.engine_process; echo n=$?"], tmp_path)
    assert r.stdout.splitlines() == ["s=127", "engine: stopped  pid: -  restarts: 0  rss: -", "n=1"], r.stdout + r.stderr
    assert not list((tmp_path / "s").glob("aiosh/engine-*.log"))  # (nor its empty log file)


def test_llama_cpp_high_level_api_loads_only_when_asked():
    # the kernel and the engine import llama.cpp's bindings only (numpy, jinja2 and Llama cost ~0.25 s at every
    # fresh start); anyone else in the process still gets the whole package on first touch
    code = (
        "import sys; from aiosh.kernel import model, llama_context; import llama_cpp as l\n"
        "print(sorted(m for m in ('numpy', 'jinja2', 'llama_cpp.llama') if m in sys.modules))\n"
        "print(callable(l.llama_decode)); from llama_cpp import Llama; import llama_cpp.llama_grammar as g\n"
        "print(Llama.__module__, l.__version__ == __import__('importlib.metadata').metadata.version('llama_cpp_python'))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.splitlines() == ["[]", "True", "llama_cpp.llama True"], r.stderr


@pytest.mark.parametrize("overrides", [{}, {"kernel": {"slots": 3, "kv_cells": 4096, "batch_tokens": 64}},
                                       {"model": {"extra_buffers": False, "n_threads": 1}}])
def test_the_load_arguments_sent_early_are_the_kernels_own(tmp_path, overrides):
    # two functions compute them from the configuration (the front end's, before the kernel exists, and the
    # kernel's spec); if they drift apart, every early engine silently loads twice
    from aiosh.kernel.engine_process import LOAD_KEYS
    from aiosh.kernel.local_engine import make_local
    from aiosh.kernel.scheduler import Policy
    from aiosh.kernel.startup_checks import engine_load_args

    cfg = load_config(cwd=tmp_path, overrides={"storage": {"path": ""}, **overrides})
    backend, _vocab = make_local(cfg, Policy)
    spec = backend._child_spec()
    assert engine_load_args(cfg) == {k: spec[k] for k in LOAD_KEYS}


def test_the_engine_process_asks_for_huge_pages_unless_the_user_said(monkeypatch):
    from aiosh.kernel.engine_spawn import child_env

    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert child_env()["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")
    assert child_env()["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=0")
    assert child_env()["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=0"


# --- on the real model -------------------------------------------------------------------------------------------
def _wait_tokens(k, pid, timeout=60.0):
    deadline = time.monotonic() + timeout
    while k.proc(pid).tokens_out == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    return k.proc(pid).tokens_out


def _config(tmp_path, **kernel):
    return load_config(cwd=tmp_path, overrides={
        "kernel": {"slots": 4, "kv_cells": 8192, **kernel}, "plugins": {"paths": [AGENTS]},
        "storage": {"path": ""},
    })


def _kernel(tmp_path, **kernel):
    return Kernel(_config(tmp_path, **kernel))


@pytest.mark.model
@pytest.mark.timeout(300)
@pytest.mark.parametrize("early_cells", [8192, 4096], ids=["same settings", "other settings"])
def test_the_kernel_takes_the_engine_started_before_it(tmp_path, monkeypatch, early_cells):
    # the early process starts loading with the load arguments it was sent; if the kernel's spec says otherwise
    # (here: another KV pool), it loads again with the kernel's, and the kernel still takes that process
    from aiosh.kernel import engine_spawn
    from aiosh.kernel.startup_checks import engine_load_args

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    pid = engine_spawn.prestart(engine_load_args(_config(tmp_path, kv_cells=early_cells)))
    assert pid is not None
    k = _kernel(tmp_path)
    try:
        assert k.engine_start(wait=240)
        assert k.engine_info().pid == pid  # the same process: no second one was started
        assert k.local.stats.kv_capacity == 8192  # the context has the kernel's settings, whatever was sent early
        out = Pipe("out")
        child = k.spawn("chat", ["Say hi"], stdout=out, stderr=out, options={"max_tokens": 3})
        assert k.wait(child, 120)[1] == 0 and out.read_all().strip()
    finally:
        k.shutdown()
        engine_spawn.dismiss_prestarted()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.model
@pytest.mark.timeout(120)
def test_a_model_llama_cpp_refuses_after_its_header_passed_is_one_line_per_call(tmp_path):
    # the first 3 MB of the real GGUF: its header passes the start-up checks, llama.cpp refuses the rest (in the
    # kernel's vocabulary load and in the engine process): each chat is one line and status 1, and the script goes on
    bad = tmp_path / "truncated.gguf"
    with open(find_embedded_model(), "rb") as fh:
        bad.write_bytes(fh.read(3_000_000))
    (tmp_path / "aiosh.toml").write_text(f'[model]\npath = "{bad}"\n')
    r = _aiosh(["-c", "chat --max-tokens 4 hi; echo s=$?; chat --max-tokens 4 hi; echo s=$?; echo on"], tmp_path)
    assert r.returncode == 0 and r.stdout == "s=1\ns=1\non\n"
    line = f"aiosh: chat: llm: {bad}: llama.cpp could not load this model (corrupt or unsupported GGUF)"
    assert r.stderr.splitlines() == [line, line], r.stderr


@pytest.mark.model
@pytest.mark.timeout(300)
def test_engine_killed_mid_stream_fails_calls_in_flight_then_restarts(tmp_path):
    with _kernel(tmp_path) as k:
        errs = [Pipe(), Pipe()]
        pids = [k.spawn("talker", ["400"], stdout=Pipe(), stderr=e) for e in errs]
        for pid in pids:
            assert _wait_tokens(k, pid) > 0
        first = k.engine_info()
        assert first.state == "ready" and first.pid and first.rss_bytes
        os.kill(first.pid, signal.SIGSEGV)
        for pid, err in zip(pids, errs, strict=True):
            assert k.wait(pid, 60) == (pid, 1)
            assert err.read_all() == f"aiosh: talker: llm: {CRASH_LINE}\n"
        # the kernel carries on: the next call waits for the new engine (shown as waiting) and is answered
        out, err = Pipe(), Pipe()
        pid = k.spawn("chat", ["Name a colour."], stdout=out, stderr=err, options={"max_tokens": 6})
        while_restarting = set()
        deadline = time.monotonic() + 120
        while k.engine_info().state != "ready" and time.monotonic() < deadline:
            if any(s.owner == pid for s in k.backends.seqs()):  # its call is queued for the engine
                while_restarting.add((k.proc(pid).state, k.proc(pid).wchan))
            time.sleep(0.01)
        assert while_restarting <= {("S", "slot")}
        assert k.wait(pid, 120) == (pid, 0), err.read_all()
        assert out.read_all().strip()
        after = k.engine_info()
        assert after.state == "ready" and after.pid != first.pid and after.restarts == 1
        assert after.last_error.startswith("engine crashed (SIGSEGV)")


@pytest.mark.model
@pytest.mark.timeout(400)
def test_three_crashes_in_a_minute_fail_fast_until_restart(tmp_path):
    # extra buffers on, so the first crash (before any decode) is the one retried without them, on every CPU: it
    # counts like the others (on a CPU without AMX, where "auto" keeps them on, it once did not)
    cfg = load_config(cwd=tmp_path, overrides={
        "kernel": {"slots": 4, "kv_cells": 8192}, "model": {"extra_buffers": True}, "storage": {"path": ""}})
    with Kernel(cfg) as k:
        for _ in range(3):
            assert k.engine_start(wait=120)
            os.kill(k.engine_info().pid, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while k.engine_info().state == "ready" and time.monotonic() < deadline:
                time.sleep(0.05)
        deadline = time.monotonic() + 30
        while k.engine_info().state != "failed" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert k.engine_info().state == "failed"
        assert k.engine_info().extra_buffers.startswith("off (retry: the engine crashed (SIGKILL) with them on")
        err = Pipe()
        t0 = time.monotonic()
        pid = k.spawn("chat", ["hi"], stdout=Pipe(), stderr=err, options={"max_tokens": 4})
        assert k.wait(pid, 30) == (pid, 1)
        assert time.monotonic() - t0 < 10  # at once, not after a start
        line = err.read_all()
        assert line.count("\n") == 1 and "engine crashed 3 times in a minute (last: SIGKILL)" in line
        assert "sched engine restart" in line
        k.engine_restart()
        pid = k.spawn("chat", ["hi"], stdout=Pipe(), stderr=(err := Pipe()), options={"max_tokens": 4})
        assert k.wait(pid, 120) == (pid, 0), err.read_all()
        assert k.engine_info().state == "ready"


@pytest.mark.model
@pytest.mark.timeout(300)
def test_a_grammar_that_cannot_match_is_refused_before_the_engine(tmp_path):
    with _kernel(tmp_path) as k:
        assert k.engine_start(wait=120)
        pid = k.engine_info().pid
        h = k.backends.submit(GenRequest(prompt="Say yes:", grammar="root ::= [b-a]", max_tokens=4))
        res = h.wait(30)
        assert (res.finish_reason, res.error) == (
            "error", "invalid grammar: character class [b-a] is empty or has an empty range")
        h = k.backends.submit(GenRequest(prompt="Say yes:", grammar='root ::= "yes" | "no"', max_tokens=4))
        assert h.wait(60).text in ("yes", "no")  # the same engine goes on
        assert k.engine_info().pid == pid and k.engine_info().restarts == 0


@pytest.mark.model
@pytest.mark.timeout(300)
def test_extra_buffers_crash_before_the_first_decode_is_retried_without_them(tmp_path, monkeypatch):
    monkeypatch.setenv(TEST_CRASH_ENV, "extra-buffers")  # the engine dies (SIGSEGV) if loaded with them on
    cfg = load_config(cwd=tmp_path, overrides={
        "kernel": {"slots": 2, "kv_cells": 4096}, "model": {"extra_buffers": True}, "storage": {"path": ""}})
    with Kernel(cfg) as k:
        assert k.engine_info().extra_buffers.startswith("on (model.extra_buffers = true)")
        out, err = Pipe(), Pipe()
        pid = k.spawn("chat", ["Name a colour."], stdout=out, stderr=err, options={"max_tokens": 6})
        assert k.wait(pid, 120) == (pid, 0), err.read_all()  # its call went again to the retried engine
        assert out.read_all().strip()
        info = k.engine_info()
        assert info.extra_buffers.startswith("off (retry: the engine crashed (SIGSEGV) with them on")
        assert info.restarts == 1
        assert any("extra buffer types on; retrying without" in w for w in k.warnings)


@pytest.mark.model
@pytest.mark.timeout(120)
def test_sigkill_of_aiosh_leaves_no_engine_process(tmp_path):
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "c"), XDG_DATA_HOME=str(tmp_path / "d"),
               XDG_STATE_HOME=str(tmp_path / "s"))
    p = subprocess.Popen([sys.executable, "-m", "aiosh.cli", "-c", "sched engine start; sleep 0.2; "
                          "while true; do sched engine; sleep 0.5; done"],
                         env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    engine_pid = None
    deadline = time.monotonic() + 90
    try:
        while engine_pid is None and time.monotonic() < deadline:
            line = p.stdout.readline()
            if line.startswith("engine: ready"):
                engine_pid = int(line.split("pid:")[1].split()[0])
        assert engine_pid
        assert os.getpgid(engine_pid) != os.getpgid(p.pid)  # its own process group: a terminal's Ctrl-C misses it
    finally:
        p.kill()
        p.wait(10)
    deadline = time.monotonic() + 10
    while _alive(engine_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(engine_pid)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.model
@pytest.mark.timeout(240)
def test_ctrl_c_in_a_terminal_interrupts_the_agent_and_leaves_the_engine_alone(tmp_path):
    pexpect = pytest.importorskip("pexpect")
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "c"), XDG_DATA_HOME=str(tmp_path / "d"),
               XDG_STATE_HOME=str(tmp_path / "s"), TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1")
    sh = pexpect.spawn(sys.executable, ["-m", "aiosh.cli"], env=env, cwd=str(tmp_path), encoding="utf-8",
                       timeout=90, dimensions=(40, 160))
    try:
        sh.expect(r"aiosh(\[\d+\])?\$")
        sh.sendline("sched engine start")  # the shell started it in the background already; this waits for nothing
        sh.sendline("chat --max-tokens 2 hi > /dev/null; sched engine")
        sh.expect(r"engine: ready\s+pid: (\d+)\s+restarts: 0")
        engine_pid = int(sh.match.group(1))
        sh.sendline("chat --max-tokens 400 --temperature 0 'Tell me a very long story about a dragon.'")
        sh.expect_exact("dragon.'")
        time.sleep(3.0)  # streaming by now (400 tokens take far longer)
        sh.sendcontrol("c")
        sh.sendline('echo "st=<$?>"')
        sh.expect(r"st=<(\d+)>\r\n", timeout=60)
        assert sh.match.group(1) == "130"
        sh.sendline("sched engine")
        sh.expect(r"engine: (\w+)\s+pid: (\d+)\s+restarts: (\d+)")
        assert sh.match.groups() == ("ready", str(engine_pid), "0")  # the engine never saw the Ctrl-C
        assert _alive(engine_pid)
    finally:
        if sh.isalive():
            sh.sendline("exit")
            sh.expect(pexpect.EOF, timeout=30)


def test_the_monitor_header_shows_the_engine_process():
    from aiosh.kernel.engine_client import EngineInfo

    from aiosh.monitor.collector import HeaderView, engine_label
    from aiosh.monitor.header import render_header

    info = EngineInfo(pid=4242, state="restarting", restarts=2, rss_bytes=300 * 2**20, extra_buffers="off (x)",
                      log_path="/tmp/e.log")
    label = engine_label(info)
    assert label == "engine restarting pid 4242 2 restarts 300 MB"
    view = HeaderView(model="llama 135M", model_path="/m.gguf", n_params=1, n_threads=2, n_gpu_layers=0, uptime=5,
                      n_agents=1, n_running=0, policy="fair", engine=label)
    assert label in render_header(view, 0.5, False).plain
    assert engine_label(None) == ""


@pytest.mark.model
@pytest.mark.timeout(180)
def test_verbose_shows_the_engine_log(tmp_path):
    r = _aiosh(["--verbose", "-c", "chat --max-tokens 2 --temperature 0 hi > /dev/null; echo st=$?"], tmp_path)
    assert r.stdout == "st=0\n", r.stderr
    assert "aiosh: llama.cpp extra buffer types" in r.stderr  # the decision, from the kernel
    assert "llama_model_loader" in r.stderr or "load_tensors" in r.stderr  # llama.cpp's own lines, from the engine
