"""`aiosh` end to end, in subprocesses: entry points, statuses, one-line start-up errors, signals to aiosh."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.timeout(120)]

AGENTS = str(Path(__file__).parent / "agents")


@pytest.fixture
def env(tmp_path, monkeypatch):
    e = dict(os.environ)
    e["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    e["XDG_DATA_HOME"] = str(tmp_path / "data")
    e["PYTHONUNBUFFERED"] = "1"
    (tmp_path / "work").mkdir()
    return e


def aiosh(args: list[str], env: dict, cwd: Path, stdin: str | None = None, timeout: float = 90):
    return subprocess.run(
        [sys.executable, "-m", "aiosh.cli", *args], input=stdin, capture_output=True, text=True, env=env,
        cwd=cwd, timeout=timeout,
    )


def test_version_and_help(env, tmp_path):
    r = aiosh(["--version"], env, tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("aiosh ")
    r = aiosh(["--help"], env, tmp_path)
    assert r.returncode == 0 and "-c COMMANDS" in r.stdout and "--config" in r.stdout


def test_dash_c_statuses_and_builtins(env, tmp_path):
    r = aiosh(["-c", "echo hi; false; echo $?; nosuch; echo $?; exit 3"], env, tmp_path)
    assert r.stdout == "hi\n1\n127\n"
    assert r.stderr == "aiosh: line 1: nosuch: command not found\n"
    assert r.returncode == 3


def test_script_with_arguments_and_stdin_commands(env, tmp_path):
    script = tmp_path / "s.aish"
    script.write_text('echo "$# $1 $2"\nsleep 0.1 &\nwait $!\necho "waited $?"\n')
    r = aiosh([str(script), "a", "b c"], env, tmp_path)
    assert (r.returncode, r.stdout) == (0, "2 a b c\nwaited 0\n")
    r = aiosh([], env, tmp_path, stdin="echo one\necho two\nexit 4\n")
    assert (r.returncode, r.stdout) == (4, "one\ntwo\n")


def test_missing_script(env, tmp_path):
    r = aiosh(["nope.aish"], env, tmp_path)
    assert r.returncode == 127
    assert r.stderr.strip() == "aiosh: nope.aish: No such file or directory"


def test_bad_config_key_is_one_line_naming_file_and_key(env, tmp_path):
    (tmp_path / "aiosh.toml").write_text("[kernel]\nslotz = 3\n")
    r = aiosh(["-c", "echo never"], env, tmp_path)
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0] == f"aiosh: {tmp_path / 'aiosh.toml'}: [kernel] slotz: unknown key (did you mean 'slots'?)"


def test_bad_config_value_and_explicit_config(env, tmp_path):
    cfg = tmp_path / "other.toml"
    cfg.write_text("[model]\nn_threads = -3\n")
    r = aiosh(["--config", str(cfg), "-c", "echo never"], env, tmp_path)
    assert r.returncode == 2
    assert len(r.stderr.splitlines()) == 1 and "[model] n_threads" in r.stderr and str(cfg) in r.stderr


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        (None, "no such model file"),
        (b"not a model at all", "not a GGUF model file"),
    ],
)
def test_bad_model_file_is_one_line(env, tmp_path, content, expect):
    model = tmp_path / "m.gguf"
    if content is not None:
        model.write_bytes(content)
    (tmp_path / "aiosh.toml").write_text(f'[model]\npath = "{model}"\n')
    r = aiosh(["-c", "echo never"], env, tmp_path)
    assert r.returncode == 1
    assert r.stderr.splitlines() == [f"aiosh: {model}: {expect}"]


def test_window_larger_than_model_supports(env, tmp_path):
    (tmp_path / "aiosh.toml").write_text("[model]\nn_ctx = 100000\n")
    r = aiosh(["-c", "echo never"], env, tmp_path)
    assert r.returncode == 1
    assert len(r.stderr.splitlines()) == 1
    assert "model.n_ctx 100000 is larger than the model's trained context 8192" in r.stderr


@pytest.mark.model
def test_chat_through_a_pipe_on_the_real_model(env, tmp_path):
    r = aiosh(["-c", 'chat --max-tokens 8 --temperature 0 "Name a colour." | cat; echo "status $?"'], env, tmp_path)
    assert r.returncode == 0, r.stderr
    *answer, last = r.stdout.rstrip("\n").split("\n")
    assert last == "status 0"
    assert "".join(answer).strip()  # some text, wording not checked
    r = aiosh(["-c", "echo 'The sky is blue.' | chat --max-tokens 6 'Repeat:' > out.txt; echo $?; cat out.txt | wc -l"],
              env, tmp_path)
    assert r.stdout.split("\n")[0] == "0"
    assert (tmp_path / "out.txt").read_text().strip()


@pytest.mark.model
def test_agent_usage_error_and_kill_statuses(env, tmp_path):
    r = aiosh(["-c", "chat --nice x hi; echo $?; sleep 30 & kill %1; wait %1; echo $?; kill %7; echo $?"],
              env, tmp_path)
    assert r.stdout.splitlines() == ["2", "143", "1"]
    assert "aiosh: line 1: kill: %7: no such job" in r.stderr


def test_sigterm_to_aiosh_hangs_up_jobs_and_exits_143(env, tmp_path):
    p = subprocess.Popen([sys.executable, "-m", "aiosh.cli", "-c", "sleep 60 & sleep 60"], env=env, cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3.0)
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    rc = p.wait(30)
    assert rc == 143
    assert time.monotonic() - t0 < 15


def test_monitor_needs_a_terminal_and_a_script(env, tmp_path):
    r = aiosh(["--monitor", "-c", "echo x"], env, tmp_path)
    assert (r.returncode, r.stderr) == (2, "aiosh: --monitor: needs a terminal\n")
    r = aiosh(["-c", "top"], env, tmp_path)
    assert r.returncode == 127 or "top" in r.stderr
