"""kernel.access: capabilities (needs ∩ policy ∩ run ∩ parent), deny lists, grants, confirmations of irreversible
actions (batch refusal, --yes, y/N through Kernel.questions/answer), the audit log, status 126, and the shell's
--allow/--deny/--yes options and `audit` command."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest
from aiosh.kernel.access import AccessManager, Cap, intersect, meet, parse_capabilities, parse_capability
from aiosh.kernel.streams import Pipe

from aiosh.shell.agents import parse_options
from aiosh.shell.errors import ShellError

# --- the capability algebra (no kernel) ---------------------------------------------------------------------------


def test_parse_capabilities():
    assert parse_capability("tool:calculator") == Cap("tool", "calculator")
    assert parse_capability("tool:*") == Cap("tool", "*")
    assert parse_capability("read:docs/") == Cap("read", "docs/")
    assert parse_capability("write:") == Cap("write", ".")
    assert parse_capability(" spawn ") == Cap("spawn")
    assert [str(c) for c in parse_capabilities("tool:calculator,read:docs/,write:out/,spawn")] == [
        "tool:calculator", "read:docs/", "write:out/", "spawn"]
    for bad in ("tools:x", "spawn:3", "read", "tool:", "tool:a b", "nice", "memory"):
        with pytest.raises(ValueError, match="capability|tool name"):
            parse_capability(bad)


def test_meet_and_intersect():
    w = "/w"
    assert meet(Cap("*"), Cap("tool", "x")) == Cap("tool", "x")
    assert meet(Cap("tool", "*"), Cap("tool", "x")) == Cap("tool", "x")
    assert meet(Cap("tool", "x"), Cap("tool", "y")) is None
    assert meet(Cap("read", w), Cap("read", w + "/docs")) == Cap("read", w + "/docs")
    assert meet(Cap("read", w + "/docs"), Cap("read", w + "/docsx")) is None
    assert meet(Cap("read", w), Cap("write", w)) is None
    got = intersect({Cap("tool", "*"), Cap("read", w), Cap("spawn")}, {Cap("tool", "a"), Cap("read", w + "/d")})
    assert got == {Cap("tool", "a"), Cap("read", w + "/d")}


def test_admit_needs_policy_run_and_parent(tmp_path):
    w = str(tmp_path)
    am = AccessManager(allow=["tool:calculator", "tool:clock", "read:./", "spawn"], deny=["tool:clock"])
    am.admit(1, cwd=w)  # undeclared needs, no --allow: the policy
    assert am.capabilities(1) == ["read:" + os.path.realpath(w) + "/", "spawn", "tool:calculator", "tool:clock"]
    assert am.permits(1, "tool:calculator") and am.permits(1, f"read:{w}/docs/a.txt")
    assert not am.permits(1, "tool:clock")  # the policy's deny wins over its allow
    assert not am.permits(1, "tool:write_file") and not am.permits(1, f"write:{w}/x")
    assert not am.permits(1, "read:/etc/passwd")
    am.admit(2, cwd=w, needs=("tool:*",))  # declared needs narrow it
    assert am.capabilities(2) == ["tool:calculator", "tool:clock"] and not am.permits(2, "spawn")
    am.admit(3, cwd=w, allow=["tool:calculator,read:docs/,write:out/,spawn"])  # --allow: not more than the policy
    assert am.capabilities(3) == ["read:" + os.path.realpath(w) + "/docs/", "spawn", "tool:calculator"]
    am.admit(4, cwd=w, deny=["spawn"])
    assert not am.permits(4, "spawn") and am.permits(4, "tool:calculator")
    # children: never more than the parent (3), whatever they ask; denies are inherited
    am.admit(5, cwd=w, parent=3, allow=["tool:clock", "tool:calculator", "read:./"])
    assert am.capabilities(5) == ["read:" + os.path.realpath(w) + "/docs/", "tool:calculator"]
    am.admit(6, cwd=w, parent=4)
    assert not am.permits(6, "spawn")
    am.admit(7, cwd=w, parent=99)  # a parent never admitted: nothing
    assert am.capabilities(7) == []
    with pytest.raises(ValueError, match="unknown capability"):
        am.admit(8, cwd=w, allow=["fly"])


def test_grants_and_the_recent_log():
    am = AccessManager()
    assert not am.check(2, "memory.read_other", "x")
    am.grant(2, "memory.read_other")
    assert am.check(2, "memory.read_other", "y")
    am.forget(2)
    assert not am.check(2, "memory.read_other")
    assert [(r["pid"], r["decision"], r["detail"]) for r in am.recent(10)] == [
        (2, "deny", "x"), (2, "grant", ""), (2, "allow", "y"), (2, "deny", "")]
    assert len(am.recent(2)) == 2 and am.recent(5, pid=3) == []


def test_shell_run_options():
    opts, rest = parse_options("x", ["--allow", "tool:calculator,read:docs/", "--deny=spawn", "--allow", "spawn",
                                     "--yes", "--nice", "3", "hi"])
    assert opts == {"allow": ["tool:calculator", "read:docs/", "spawn"], "deny": ["spawn"], "yes": True, "nice": 3}
    assert rest == ["hi"]
    with pytest.raises(ShellError, match="x: --allow: invalid capability 'fly'"):
        parse_options("x", ["--allow", "tool:calculator,fly"])
    with pytest.raises(ShellError, match="--yes: takes no value"):
        parse_options("x", ["--yes=1"])
    with pytest.raises(ShellError, match="--deny: option requires an argument"):
        parse_options("x", ["--deny"])


# --- on a kernel --------------------------------------------------------------------------------------------------

AGENTS = textwrap.dedent('''
    import json
    from aiosh.kernel.agent import agent
    from aiosh.kernel.tools import ToolError

    @agent("acall", description="calls one tool: acall NAME JSON-ARGS")
    async def acall(ctx):
        try:
            value = await ctx.tool(ctx.argv[0], **json.loads(ctx.argv[1] if len(ctx.argv) > 1 else "{}"))
        except ToolError as exc:
            ctx.print("ToolError", exc)
            return 3
        except PermissionError as exc:
            ctx.print("PermissionError", exc)
            return 4
        ctx.print("ok", json.dumps(value))
        return 0

    @agent("rawcall", description="calls a tool and does not handle errors")
    async def rawcall(ctx):
        await ctx.tool(ctx.argv[0], **json.loads(ctx.argv[1]))
        return 0

    @agent("kid", description="spawns acall with the given args and options: kid JSON-OPTIONS NAME JSON-ARGS")
    async def kid(ctx):
        opts = json.loads(ctx.argv[0])
        nice = opts.pop("nice", None)
        try:
            child = await ctx.spawn("acall", ctx.argv[1:], options=opts, nice=nice)
        except PermissionError as exc:
            ctx.print("PermissionError", exc)
            return 4
        pid, status = await ctx.wait(child.pid)
        ctx.stdout.write(await child.stdout.aread_all())
        return status

    @agent("calc_only", description="declares tool:calculator only", needs=("tool:calculator",))
    async def calc_only(ctx):
        for name, args in (("calculator", {"expression": "2+2"}), ("clock", {})):
            try:
                ctx.print(name, await ctx.tool(name, **args))
            except PermissionError as exc:
                ctx.print(name, "PermissionError", exc)
        return 0
''')


@pytest.fixture(scope="module")
def ak(tmp_path_factory, kernel_factory):
    from aiosh.kernel.config import load_config

    tmp = tmp_path_factory.mktemp("accessk")
    (tmp / "plugins").mkdir()
    (tmp / "plugins" / "aagents.py").write_text(AGENTS)
    work = tmp / "work"
    (work / "docs").mkdir(parents=True)
    (work / "docs" / "a.txt").write_text("in docs\n")
    (work / "top.txt").write_text("at the top\n")
    cfg = load_config(cwd=tmp, overrides={
        "kernel": {"slots": 2, "kv_cells": 1024}, "model": {"n_ctx": 512, "n_threads": 1},
        "storage": {"path": str(tmp / "k.db")}, "plugins": {"paths": [str(tmp / "plugins")]},
    })
    k = kernel_factory(cfg)
    k.test_cwd = str(work)
    yield k
    k.shutdown()


def run(k, agent: str, *argv: str, timeout: float = 20, options: dict | None = None) -> tuple[int, str, str, int]:
    out, err = Pipe(), Pipe()
    pid = k.spawn(agent, list(argv), stdout=out, stderr=err, cwd=k.test_cwd, options=options or {})
    got = k.wait(pid, timeout)
    assert got is not None, f"{agent} {argv} did not end"
    return got[1], out.read_all(), err.read_all(), pid


def audit_rows(k, pid: int) -> list[tuple[str, str]]:
    rows = k.storage.query("SELECT capability, decision, detail FROM audit WHERE run = ? AND pid = ? ORDER BY id",
                           (k.storage.run, pid))
    return [(r["capability"], r["decision"]) for r in rows]




@pytest.mark.model
@pytest.mark.timeout(60)
def test_default_policy_and_run_allow(ak):
    assert run(ak, "acall", "calculator", '{"expression": "2*3"}')[:2] == (0, "ok 6\n")
    status, out, _, pid = run(ak, "acall", "delete_file", '{"path": "top.txt"}')  # not in the default policy
    assert (status, out) == (4, f"PermissionError tool:delete_file: acall[{pid}] may not call delete_file\n")
    assert audit_rows(ak, pid) == [("tool:delete_file", "deny")]
    # --allow narrows: the calculator only
    status, out, _, pid = run(ak, "acall", "read_file", '{"path": "top.txt"}', options={"allow": ["tool:calculator"]})
    assert status == 4 and out.startswith("PermissionError tool:read_file")
    # read:docs/ covers docs/ only
    opts = {"allow": ["tool:read_file", "read:docs/"]}
    assert run(ak, "acall", "read_file", '{"path": "docs/a.txt"}', options=opts)[:2] == (0, 'ok "in docs\\n"\n')
    status, out, _, pid = run(ak, "acall", "read_file", '{"path": "top.txt"}', options=opts)
    assert (status, out) == (4, f"PermissionError read:top.txt: acall[{pid}] may not read top.txt\n")
    real = os.path.realpath(ak.test_cwd)
    assert audit_rows(ak, pid) == [("tool:read_file", "allow"), (f"read:{real}/top.txt", "deny")]
    # --deny wins
    status, out, _, _ = run(ak, "acall", "calculator", '{"expression": "1"}', options={"deny": ["tool:*"]})
    assert status == 4 and out.startswith("PermissionError tool:calculator")


@pytest.mark.model
@pytest.mark.timeout(60)
def test_declared_needs_limit_an_agent(ak):
    status, out, _, _ = run(ak, "calc_only")
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == "calculator 4" and lines[1].startswith("clock PermissionError tool:clock")


@pytest.mark.model
@pytest.mark.timeout(60)
def test_a_child_never_gets_more_than_its_parent(ak):
    parent_opts = {"allow": ["tool:calculator", "spawn"]}
    status, out, _, _ = run(ak, "kid", "{}", "calculator", '{"expression": "5-1"}', options=parent_opts)
    assert (status, out) == (0, "ok 4\n")
    # the child asks for the clock (in the policy, not in its parent's set): refused
    status, out, _, ppid = run(ak, "kid", '{"allow": ["tool:clock", "tool:calculator"]}', "clock", "{}",
                               options=parent_opts)
    assert status == 4 and out.startswith("PermissionError tool:clock")
    # no spawn capability: the parent cannot start a child at all
    status, out, _, pid = run(ak, "kid", "{}", "clock", "{}", options={"allow": ["tool:clock"]})
    assert (status, out) == (4, f"PermissionError spawn: kid[{pid}] may not start agents\n")
    assert audit_rows(ak, pid) == [("spawn", "deny")]
    # a lower nice than its own needs nice.lower (not in the default policy)
    status, out, _, _ = run(ak, "kid", '{"nice": -5}', "clock", "{}")
    assert status == 4 and out.startswith("PermissionError nice.lower")


@pytest.mark.model
@pytest.mark.timeout(60)
def test_irreversible_actions_in_batch_mode(ak):
    assert ak.interactive_confirmations is False
    args = '{"path": "out/b.txt", "content": "batch"}'
    status, out, _, pid = run(ak, "acall", "write_file", args)
    assert (status, out) == (4, "PermissionError tool:write_file: not confirmed (write_file is irreversible)\n")
    assert not os.path.exists(os.path.join(ak.test_cwd, "out", "b.txt"))
    rows = ak.storage.query("SELECT capability, decision, detail FROM audit WHERE run = ? AND pid = ? ORDER BY id",
                            (ak.storage.run, pid))
    assert [r["decision"] for r in rows] == ["allow", "allow", "deny"]
    assert rows[2]["detail"].startswith(f"batch mode, no one to ask (use --yes): acall[{pid}] wants to run "
                                        "write_file(")
    status, out, _, pid = run(ak, "acall", "write_file", args, options={"yes": True})
    assert (status, out) == (0, 'ok "wrote 5 characters to out/b.txt"\n')
    assert Path(ak.test_cwd, "out", "b.txt").read_text() == "batch"
    assert audit_rows(ak, pid)[-1] == ("tool:write_file", "yes")
    # a write outside the folder is refused before anyone is asked
    status, out, _, pid = run(ak, "acall", "write_file", '{"path": "../x.txt", "content": "x"}', options={"yes": True})
    assert status == 4 and "outside the working folder" in out
    assert not os.path.exists(os.path.join(os.path.dirname(ak.test_cwd), "x.txt"))


@pytest.mark.model
@pytest.mark.timeout(60)
def test_questions_answered_yes_and_no(ak):
    ak.interactive_confirmations = True
    try:
        for yes in (True, False):
            out = Pipe()
            name = f"q_{yes}.txt"
            pid = ak.spawn("acall", ["write_file", f'{{"path": "{name}", "content": "hi"}}'], stdout=out,
                           cwd=ak.test_cwd)
            deadline = time.monotonic() + 10
            while not ak.questions() and time.monotonic() < deadline:
                time.sleep(0.02)
            qs = ak.questions()
            assert len(qs) == 1 and qs[0].pid == pid and qs[0].agent == "acall"
            assert qs[0].text.startswith(f'acall[{pid}] wants to run write_file(path="{name}", content="hi")')
            info = ak.proc(pid)
            assert (info.state, info.wchan) == ("S", "user")
            assert ak.answer(qs[0].id, yes) is True
            assert ak.wait(pid, 10) == (pid, 0 if yes else 4)
            assert ak.answer(qs[0].id, yes) is False  # answered already
            assert os.path.exists(os.path.join(ak.test_cwd, name)) is yes
            assert [d for _, d in audit_rows(ak, pid)][-2:] == ["ask", "yes" if yes else "no"]
        # an agent killed while it waits: its question goes away
        pid = ak.spawn("acall", ["write_file", '{"path": "k.txt", "content": "hi"}'], cwd=ak.test_cwd)
        deadline = time.monotonic() + 10
        while not ak.questions() and time.monotonic() < deadline:
            time.sleep(0.02)
        ak.signal(pid, "TERM")
        assert ak.wait(pid, 10) == (pid, 143)
        assert ak.questions() == []
        assert audit_rows(ak, pid)[-1] == ("tool:write_file", "cancel")
    finally:
        ak.interactive_confirmations = False


@pytest.mark.model
@pytest.mark.timeout(60)
def test_unhandled_permission_error_ends_with_126(ak):
    status, out, err, pid = run(ak, "rawcall", "delete_file", '{"path": "top.txt"}')
    assert status == 126
    assert err == f"aiosh: rawcall[{pid}]: permission denied: tool:delete_file: rawcall[{pid}] may not call " \
                  f"delete_file\n"


@pytest.mark.model
@pytest.mark.timeout(60)
def test_shell_allow_deny_yes_and_audit(ak):
    from aiosh.session import make_shell

    out, err = Pipe(), Pipe()
    sh = make_shell(ak, ak.config, stdout=out, stderr=err, stdin=None, interactive=False)
    src = (f"cd {ak.test_cwd}\n"
           "acall --allow tool:calculator calculator '{\"expression\": \"3*3\"}'; echo \"s=$?\"\n"
           "run --deny tool:calculator acall calculator '{\"expression\": \"1\"}'; echo \"s=$?\"\n"
           "acall --allow fly calculator '{}'; echo \"s=$?\"\n"
           "rawcall --yes write_file '{\"path\": \"sh.txt\", \"content\": \"from the shell\"}'; echo \"s=$?\"\n"
           "rawcall write_file '{\"path\": \"sh2.txt\", \"content\": \"x\"}'; echo \"s=$?\"\n"
           "audit -n 3\n")
    status = sh.run_source(src, filename="t.aish")
    out.close()
    err.close()
    text, errs = out.read_all(), err.read_all()
    lines = text.splitlines()
    assert lines[:2] == ["ok 9", "s=0"]
    assert lines[2].startswith("PermissionError tool:calculator") and lines[3] == "s=4"
    assert lines[4:7] == ["s=2", "s=0", "s=126"]
    assert "acall: --allow: invalid capability 'fly'" in errs
    assert "permission denied: tool:write_file: not confirmed" in errs
    assert Path(ak.test_cwd, "sh.txt").read_text() == "from the shell"
    assert not os.path.exists(os.path.join(ak.test_cwd, "sh2.txt"))
    table = lines[7:]
    assert table[0].split() == ["TIME", "RUN:PID", "AGENT", "DECISION", "CAPABILITY", "DETAIL"]
    assert len(table) == 4 and "rawcall" in table[-1] and "deny" in table[-1] and "batch mode" in table[-1]
    assert status == 0
