"""kernel.tools and the built-in tools: schemas from signatures, validation, confinement to the working folder,
timeouts and concurrency; then `ctx.tool` from real agents on a kernel (syscall records, errors, a hung tool)."""

from __future__ import annotations

import json
import os
import sqlite3
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Literal

import pytest
from aiosh.kernel.tools import ToolContext, ToolError, describe_signature, tool, validate_args
from aiosh.plugins.tools import calculator as calc_mod
from aiosh.plugins.tools.calculator import calculator, evaluate
from aiosh.plugins.tools.files import delete_file, list_dir, read_file, write_file
from aiosh.plugins.tools.sql import sql_query

# --- schemas and validation (no kernel) ---------------------------------------------------------------------------


@tool(name="demo", timeout=3, concurrency=2)
def demo(ctx: ToolContext, text: str, count: int, ratio: float = 0.5, loud: bool = False,
         tags: list[str] | None = None, mode: Literal["a", "b"] = "a") -> str:
    """Do a demo thing.

    More words that are not the summary.

    Args:
        text: the text to use,
            over two lines
        count: how many times
        ratio: a fraction
    Returns:
        something
    """
    return text * count


def test_schema_from_signature_and_docstring():
    s = demo.parameters
    assert demo.name == "demo" and demo.description == "Do a demo thing." and demo.ctx_param == "ctx"
    assert demo.timeout == 3 and demo.concurrency == 2 and not demo.irreversible
    assert s["required"] == ["text", "count"] and s["additionalProperties"] is False
    assert s["properties"]["text"] == {"type": "string", "description": "the text to use, over two lines"}
    assert s["properties"]["count"]["type"] == "integer"
    assert s["properties"]["ratio"] == {"type": "number", "description": "a fraction", "default": 0.5}
    assert s["properties"]["loud"] == {"type": "boolean", "default": False}
    assert s["properties"]["tags"]["anyOf"] == [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]
    assert s["properties"]["mode"] == {"type": "string", "enum": ["a", "b"], "default": "a"}
    assert describe_signature(demo) == ('demo(text: string, count: integer, ratio?: number = 0.5, loud?: boolean '
                                        '= false, tags?: list[string]|null = null, mode?: "a"|"b" = "a")')


def test_validation_errors_are_one_clear_line():
    assert validate_args(demo, {"text": "x", "count": 2, "ratio": 1}) == {"text": "x", "count": 2, "ratio": 1.0}
    assert validate_args(demo, {"text": "x", "count": 2, "tags": None})["tags"] is None
    cases = [
        ({"count": 2}, "demo: missing argument 'text'"),
        ({"text": "x", "count": "2"}, "demo: count: expected an integer, got a string \"2\""),
        ({"text": "x", "count": True}, "demo: count: expected an integer, got a boolean true"),
        ({"text": "x", "count": 2.5}, "demo: count: expected an integer, got a number 2.5"),
        ({"text": "x", "count": 1, "bogus": 1}, "demo: unknown argument 'bogus' (takes: text, count, ratio, loud, "
                                                "tags, mode)"),
        ({"text": "x", "count": 1, "tags": ["a", 3]}, "demo: tags: expected a list of strings or null, got a list"),
        ({"text": "x", "count": 1, "mode": "c"}, 'demo: mode: expected one of "a", "b", got "c"'),
    ]
    for args, message in cases:
        with pytest.raises(ToolError) as exc:
            validate_args(demo, args)
        assert str(exc.value).startswith(message), str(exc.value)
        assert "\n" not in str(exc.value)


def test_bad_tool_declarations_are_refused():
    with pytest.raises(TypeError, match="needs a type hint"):
        tool(name="x")(lambda a: a)

    def takes_set(a: set) -> None:
        """x"""

    with pytest.raises(TypeError, match="unsupported type"):
        tool(name="y")(takes_set)
    with pytest.raises(ValueError, match="paths"):
        tool(name="z", paths={"nope": "read"})(calculator.fn)


# --- the grammar for tool calls by the model ----------------------------------------------------------------------

def test_choice_schema_and_parse():
    from aiosh.kernel.tools import choice_schema, parse_choice

    s = choice_schema([calculator, demo], max_string=50, max_answer=80)
    alts = s["oneOf"]
    assert [a["properties"].get("tool", {}).get("const") for a in alts] == ["calculator", "demo", None]
    assert alts[0]["properties"]["args"]["properties"]["expression"] == {  # its pattern bounds it
        "type": "string", "pattern": "^[0-9a-z(-][0-9a-z ().,+*/%^-]{0,199}$"}
    assert alts[1]["properties"]["args"]["properties"]["text"] == {"type": "string", "maxLength": 50,
                                                                   "minLength": 1}  # required
    assert alts[1]["properties"]["args"]["properties"]["mode"] == {"type": "string", "enum": ["a", "b"]}
    assert alts[2]["properties"]["answer"] == {"type": "string", "minLength": 1, "maxLength": 80}
    assert choice_schema([calculator], answer=False)["properties"]["tool"] == {"const": "calculator"}
    assert choice_schema([])["required"] == ["answer"]
    got = parse_choice('{ "tool": "calculator", "args": {"expression": "1+1"} }', ["calculator"])
    assert (got.tool, got.args, got.is_answer) == ("calculator", {"expression": "1+1"}, False)
    assert parse_choice('{"answer": "Paris"}', ["calculator"]).answer == "Paris"
    with pytest.raises(ToolError, match="not complete JSON"):
        parse_choice('{"answer": "Par', [])
    with pytest.raises(ToolError, match="neither"):
        parse_choice('{"tool": "rm", "args": {}}', ["calculator"])


@pytest.mark.model
def test_choice_grammar_is_valid_gbnf(model):
    from aiosh.kernel.plugins import discover
    from aiosh.kernel.sampling import check_grammar
    from aiosh.kernel.tools import choice_grammar

    specs = list(discover().tools.values())
    for kw in ({}, {"answer": False}, {"max_string": 5}):
        check_grammar(model.vocab, choice_grammar(specs, **kw))
    g = choice_grammar([demo])
    assert "maxLength" not in g and "root ::=" in g  # converted to GBNF, not passed through
    assert r'char ::= [^"\\\x7F\x00-\x1F]' in g  # no raw newlines or control characters inside strings


def test_annotated_constraints_and_examples():
    from aiosh.kernel.tools import tools_prompt

    @tool(name="pick", example={"word": "ab", "n": 2})
    def pick(word: Annotated[str, {"pattern": "^[ab]+$", "maxLength": 4}], n: Annotated[int, {"minimum": 1}]) -> str:
        """Pick."""
        return word * n

    assert pick.parameters["properties"]["word"] == {"type": "string", "pattern": "^[ab]+$", "maxLength": 4}
    assert validate_args(pick, {"word": "abba", "n": 1}) == {"word": "abba", "n": 1}
    for args, msg in [({"word": "abc", "n": 1}, "does not match"), ({"word": "ababa", "n": 1}, "at most 4"),
                      ({"word": "a", "n": 0}, "n: at least 1")]:
        with pytest.raises(ToolError, match=msg):
            validate_args(pick, args)
    assert 'Example: {"tool": "pick", "args": {"word": "ab", "n": 2}}' in tools_prompt([pick])
    with pytest.raises(ValueError, match="example"):
        tool(name="bad", example={"word": "c", "n": 1})(pick.fn)

    def unanchored(w: Annotated[str, {"pattern": "[ab]+"}]) -> str:
        """x"""

    with pytest.raises(TypeError, match="anchored"):
        tool(name="bad3")(unanchored)


# --- calculator ---------------------------------------------------------------------------------------------------

def test_calculator_happy_path():
    assert calculator("(2 + 3) * 4") == 20
    assert calculator("7 // 2") == 3 and calculator("7 % 4") == 3 and calculator("-2 ** 2") == -4
    assert calculator("2^10") == 1024
    assert calculator("sqrt(16) + abs(-1)") == 5.0
    assert calculator("max(1, 2.5, 2)") == 2.5
    assert abs(calculator("pi") - 3.14159) < 1e-4
    assert calculator(" 1.5e3 / 3 ") == 500.0


@pytest.mark.parametrize("expr, message", [
    ("__import__('os').system('echo hi')", "not allowed"),
    ("open('x')", "unknown function 'open'"),
    ("(1).__class__", "not allowed"),
    ("x + 1", "unknown name 'x'"),
    ("'a' * 3", "only numbers"),
    ("1 / 0", "division by zero"),
    ("2 ** 100000", "exponent too large"),
    ("9 ** 9999", "result too large"),
    ("10 ** 5000", "too large"),
    ("factorial(100000)", "factorial"),
    ("1 +", "not an arithmetic expression"),
    ("-" * 100 + "1", "nested too deeply"),
    ("(" * 300 + "1" + ")" * 300, "not an arithmetic expression|too long|nested"),
    ("1+" * 400 + "1", "too long"),
    ("[1, 2]", "not allowed"),
    ("lambda: 1", "not allowed"),
    ("True + 1", "only numbers"),
    ("(-8) ** 0.5", "complex"),
    ("", "empty"),
])
def test_calculator_refuses_what_is_not_arithmetic(expr, message):
    with pytest.raises(ToolError, match=message):
        evaluate(expr)


def test_calculator_never_calls_eval(monkeypatch):
    import builtins

    def no(*a, **k):
        raise AssertionError("eval/exec used")

    monkeypatch.setattr(builtins, "eval", no)
    monkeypatch.setattr(builtins, "exec", no)
    assert calc_mod.evaluate("1+2*3") == 7


# --- files and sql, on a stub kernel (confinement without the model) ----------------------------------------------

class StubAccess:
    def __init__(self, allow: bool = True) -> None:
        self.allow = allow
        self.rows: list[tuple] = []

    def check(self, pid, capability, detail=""):
        self.rows.append((pid, capability, "allow" if self.allow else "deny", detail))
        return self.allow

    def record(self, pid, capability, decision, detail=""):
        self.rows.append((pid, capability, decision, detail))


def tctx(folder: Path, spec=read_file, allow: bool = True) -> ToolContext:
    return ToolContext(SimpleNamespace(access=StubAccess(allow)), spec, 7, "tester", str(folder), [])


@pytest.fixture()
def work(tmp_path):
    w = tmp_path / "work"
    (w / "docs").mkdir(parents=True)
    (w / "docs" / "a.txt").write_text("alpha\nbeta\n")
    (tmp_path / "secret.txt").write_text("top secret")
    (w / "docs" / "leak").symlink_to(tmp_path / "secret.txt")
    (w / "outside").symlink_to(tmp_path)
    (w / "inner").symlink_to(w / "docs")
    return w


def test_read_and_list_inside_the_folder(work):
    c = tctx(work)
    assert read_file(c, "docs/a.txt") == "alpha\nbeta\n"
    assert read_file(c, "docs/a.txt", max_chars=3) == "alp"
    assert read_file(c, "inner/a.txt") == "alpha\nbeta\n"  # a symlink that stays inside is fine
    assert read_file(c, "./docs/../docs/a.txt").startswith("alpha")
    assert list_dir(c) == ["docs/", "inner@", "outside@"]  # links are not followed to say what they are
    assert list_dir(c, "docs") == ["a.txt", "leak@"]
    assert list_dir(c, "inner") == ["a.txt", "leak@"]
    with pytest.raises(ToolError, match="no such file"):
        read_file(c, "docs/none.txt")
    with pytest.raises(ToolError, match="is a directory"):
        read_file(c, "docs")
    with pytest.raises(ToolError, match="not a folder"):
        list_dir(c, "docs/a.txt")


@pytest.mark.parametrize("path", ["/etc/passwd", "../secret.txt", "docs/../../secret.txt", "docs/leak",
                                  "outside/secret.txt", "~/x", str(Path("/tmp"))])
def test_escapes_are_refused(work, path):
    c = tctx(work)
    with pytest.raises(PermissionError):
        read_file(c, path)
    assert c._manager.access.rows[-1][2] == "deny"


def test_write_and_delete_confined(work, tmp_path):
    c = tctx(work, write_file)
    assert write_file(c, "out/new.txt", "hello") == "wrote 5 characters to out/new.txt"
    assert write_file(c, "out/new.txt", "!", append=True) == "appended 1 characters to out/new.txt"
    assert (work / "out" / "new.txt").read_text() == "hello!"
    for bad in ("../evil.txt", "/tmp/evil.txt", "outside/evil.txt", "docs/leak"):
        with pytest.raises(PermissionError):
            write_file(c, bad, "x")
    assert not (tmp_path / "evil.txt").exists() and (tmp_path / "secret.txt").read_text() == "top secret"
    assert delete_file(c, "out/new.txt") == "deleted out/new.txt"
    with pytest.raises(ToolError, match="no such file"):
        delete_file(c, "out/new.txt")
    # a symbolic link is deleted itself, never what it points to (outside or not)
    assert delete_file(c, "docs/leak").startswith("deleted the symbolic link docs/leak")
    assert not os.path.lexists(work / "docs" / "leak") and (tmp_path / "secret.txt").read_text() == "top secret"


def test_capabilities_are_asked_for_each_path(work):
    c = tctx(work, allow=False)
    with pytest.raises(PermissionError, match="may not read docs/a.txt"):
        read_file(c, "docs/a.txt")
    pid, cap, decision, detail = c._manager.access.rows[-1]
    assert (pid, cap, decision) == (7, f"read:{os.path.realpath(work / 'docs' / 'a.txt')}", "deny")
    assert detail == "read_file docs/a.txt"


def test_sql_query_is_read_only(work):
    db = work / "data.db"
    conn = sqlite3.connect(db)
    conn.executescript("CREATE TABLE t (id INTEGER, name TEXT); INSERT INTO t VALUES (1, 'ann'), (2, 'bob'), "
                       "(3, 'cy');")
    conn.commit()
    conn.close()
    c = tctx(work, sql_query)
    got = sql_query(c, "data.db", "SELECT id, name FROM t ORDER BY id")
    assert got == {"columns": ["id", "name"], "rows": [[1, "ann"], [2, "bob"], [3, "cy"]], "truncated": False}
    got = sql_query(c, "data.db", "WITH x AS (SELECT count(*) AS n FROM t) SELECT n FROM x;", max_rows=1)
    assert got["rows"] == [[3]]
    assert sql_query(c, "data.db", "SELECT id FROM t", max_rows=2)["truncated"] is True
    for bad, msg in [
        ("DELETE FROM t", "not allowed"),
        ("SELECT 1; DROP TABLE t", "one statement"),
        ("WITH x AS (SELECT 1) DELETE FROM t", "not allowed"),
        ("PRAGMA table_info(t)", "not allowed"),
        ("SELECT * FROM nope", "no such table"),
        ("ATTACH DATABASE 'x.db' AS x", "not allowed"),
        ("SELECT load_extension('x')", "not allowed"),
        ("SELECT fts3_tokenizer('simple')", "not allowed"),
        ("SELECT zeroblob(900000000) FROM t", "not allowed|too big"),
        ("WITH RECURSIVE r(s) AS (SELECT 'x' UNION ALL SELECT s || s FROM r LIMIT 40) SELECT length(s) FROM r",
         "too big"),  # SQLITE_LIMIT_LENGTH: a value doubling in size stops at 10 MB
        ("BEGIN", "not allowed"),
    ]:
        with pytest.raises(ToolError, match=msg):
            sql_query(c, "data.db", bad)
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (3,)
    conn.close()
    with pytest.raises(PermissionError):
        sql_query(c, "../data.db", "SELECT 1")
    with pytest.raises(ToolError, match="no such file"):
        sql_query(c, "none.db", "SELECT 1")


def test_clock_is_iso():
    from datetime import datetime

    from aiosh.plugins.tools.clock import clock

    t = datetime.fromisoformat(clock())
    assert t.tzinfo is not None and abs(t.timestamp() - time.time()) < 5
    assert clock(utc=True).endswith("+00:00")


def test_tools_from_entry_points(monkeypatch):
    import importlib.metadata as md

    import aiosh.kernel.plugins as kp

    class EP:
        def __init__(self, name, obj):
            self.name, self._obj = name, obj

        def load(self):
            if isinstance(self._obj, Exception):
                raise self._obj
            return self._obj

    @tool(name="ep_tool")
    def ep_tool(x: int) -> int:
        """From an entry point."""
        return x

    monkeypatch.setattr(md, "entry_points",
                        lambda group: [EP("good", ep_tool), EP("broken", ImportError("no module"))])
    found = kp.discover()
    assert found.tools["ep_tool"] is ep_tool and found.tool_origins["ep_tool"] == "entry point good"
    assert found.errors == ["entry point broken: ImportError: no module"]


def test_builtin_tools_are_discovered():
    from aiosh.kernel.plugins import discover

    found = discover()
    assert {"calculator", "clock", "read_file", "write_file", "list_dir", "delete_file", "sql_query",
            "memory_search"} <= set(found.tools)
    assert found.tools["write_file"].irreversible and not found.tools["read_file"].irreversible
    assert not found.errors


# --- ctx.tool on a real kernel ------------------------------------------------------------------------------------

AGENTS = textwrap.dedent('''
    import asyncio, json
    from aiosh.kernel.agent import agent
    from aiosh.kernel.tools import ToolError

    @agent("tcall", description="calls one tool: tcall NAME JSON-ARGS")
    async def tcall(ctx):
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

    @agent("choose", description="asks the model to pick: choose TOOLS|- ANSWER-ALLOWED QUESTION")
    async def choose(ctx):
        tools = None if ctx.argv[0] == "-" else [t for t in ctx.argv[0].split(",") if t]
        choice = await ctx.llm.call_tool([{"role": "user", "content": ctx.argv[2]}], tools=tools,
                                         answer=ctx.argv[1] == "yes", temperature=0, max_tokens=120)
        ctx.print(json.dumps({"tool": choice.tool, "args": choice.args, "answer": choice.answer, "raw": choice.raw}))
        return 0

    @agent("memtool", description="keeps two facts, then searches its memory with the memory_search tool")
    async def memtool(ctx):
        await ctx.memory.set("harbour", "the boats in Quillby harbour are painted violet")
        await ctx.memory.note("the lighthouse keeper is called Ada")
        for q in ("violet boats", "lighthouse keeper", "zebra"):
            hits = await ctx.tool("memory_search", query=q)
            ctx.print(q, "->", json.dumps([h["label"] for h in hits]))
        return 0

    @agent("tmany", description="calls a tool N times at once: tmany N NAME JSON-ARGS")
    async def tmany(ctx):
        n, name, args = int(ctx.argv[0]), ctx.argv[1], json.loads(ctx.argv[2])
        async def one():
            try:
                return "ok " + json.dumps(await ctx.tool(name, **args))
            except ToolError as exc:
                return f"ToolError {exc}"
        for line in await asyncio.gather(*[one() for _ in range(n)]):
            ctx.print(line)
        return 0
''')

TOOLS = textwrap.dedent('''
    import time
    from aiosh.kernel.tools import ToolContext, ToolError, tool

    @tool(name="hang", timeout=0.3, concurrency=2)
    def hang(ctx: ToolContext, seconds: float = 3.0) -> str:
        """Sleeps (a hung tool)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end and not ctx.cancelled.is_set():
            time.sleep(0.01)
        return "woke"

    @tool(name="boom")
    def boom(what: str = "bang") -> str:
        """Raises."""
        if what == "tool":
            raise ToolError("told to fail")
        raise RuntimeError(what)

    @tool(name="slow1", timeout=5, concurrency=1)
    def slow1(seconds: float) -> float:
        """One at a time."""
        t0 = time.monotonic()
        time.sleep(seconds)
        return round(t0, 3)

    @tool(name="aping", timeout=1)
    async def aping(n: int) -> int:
        """An async tool."""
        return n + 1
''')


@pytest.fixture(scope="module")
def tk(tmp_path_factory, kernel_factory):
    from aiosh.kernel.config import load_config

    tmp = tmp_path_factory.mktemp("toolk")
    (tmp / "plugins" / "tools").mkdir(parents=True)
    (tmp / "plugins" / "tagents.py").write_text(AGENTS)
    (tmp / "plugins" / "tools" / "ttools.py").write_text(TOOLS)
    (tmp / "work").mkdir()
    (tmp / "work" / "hello.txt").write_text("hello from the working folder\n")
    cfg = load_config(cwd=tmp, overrides={
        "kernel": {"slots": 2, "kv_cells": 1024}, "model": {"n_ctx": 512, "n_threads": 1},
        "storage": {"path": str(tmp / "k.db")}, "plugins": {"paths": [str(tmp / "plugins")]},
        "access": {"allow": ["tool:*", "read:./", "write:./", "spawn"]},
    })
    k = kernel_factory(cfg)
    k.test_cwd = str(tmp / "work")
    yield k
    k.shutdown()


def run(k, agent: str, *argv: str, timeout: float = 20, **kw) -> tuple[int, str, int]:
    from aiosh.kernel.streams import Pipe

    out = Pipe()
    pid = k.spawn(agent, list(argv), stdout=out, stderr=out, cwd=kw.pop("cwd", k.test_cwd), **kw)
    got = k.wait(pid, timeout)
    assert got is not None, f"{agent} {argv} did not end"
    return got[1], out.read_all(), pid


def _json_line(out: str) -> str:
    """The agent's one JSON line among what it wrote to the shared stdout/stderr pipe."""
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    assert len(lines) == 1, out
    return lines[0]


def tool_syscalls(k, pid: int) -> list[dict]:
    return k.storage.query("SELECT kind, detail, outcome, t_started, t_finished FROM syscalls WHERE run = ? AND "
                           "pid = ? AND kind = 'tool' ORDER BY id", (k.storage.run, pid))


@pytest.mark.model
@pytest.mark.timeout(60)
def test_ctx_tool_runs_and_records_a_syscall(tk):
    status, out, pid = run(tk, "tcall", "calculator", '{"expression": "6 * 7"}')
    assert (status, out) == (0, "ok 42\n")
    rows = tool_syscalls(tk, pid)
    assert len(rows) == 1 and rows[0]["outcome"] == "ok"
    assert rows[0]["detail"] == 'calculator {"expression": "6 * 7"}' and rows[0]["t_finished"] >= rows[0]["t_started"]
    status, out, _ = run(tk, "tcall", "read_file", '{"path": "hello.txt"}')
    assert (status, out) == (0, 'ok "hello from the working folder\\n"\n')
    status, out, _ = run(tk, "tcall", "list_dir", "{}")
    assert (status, json.loads(out[3:])) == (0, ["hello.txt"])
    status, out, _ = run(tk, "tcall", "aping", '{"n": 1}')
    assert (status, out) == (0, "ok 2\n")


@pytest.mark.model
@pytest.mark.timeout(60)
def test_ctx_tool_errors(tk):
    cases = [
        (("nosuch", "{}"), 3, "ToolError nosuch: no such tool"),
        (("calculator", "{}"), 3, "ToolError calculator: missing argument 'expression'"),
        (("calculator", '{"expression": 5}'), 3, "ToolError calculator: expression: expected a string, got an "
                                                  "integer 5"),
        (("calculator", '{"expression": "1", "x": 1}'), 3, "ToolError calculator: unknown argument 'x'"),
        (("calculator", '{"expression": "1/0"}'), 3, "ToolError calculator: division by zero"),
        (("boom", "{}"), 3, "ToolError boom: RuntimeError: bang"),
        (("boom", '{"what": "tool"}'), 3, "ToolError boom: told to fail"),
        (("read_file", '{"path": "../k.db"}'), 4, "PermissionError read_file: ../k.db: outside the working folder"),
        (("read_file", '{"path": "/etc/passwd"}'), 4, "PermissionError read_file: /etc/passwd: absolute paths"),
    ]
    for argv, want_status, want in cases:
        status, out, pid = run(tk, "tcall", *argv)
        assert status == want_status and out.startswith(want), (argv, out)
        assert out.count("\n") == 1
        outcome = tool_syscalls(tk, pid)[0]["outcome"]
        assert outcome.startswith("error: " if want_status == 3 else "denied: "), outcome


@pytest.mark.model
@pytest.mark.timeout(60)
def test_memory_search_tool_finds_the_agents_own_entries(tk):
    status, out, pid = run(tk, "memtool")
    assert status == 0, out
    assert out.splitlines() == ['violet boats -> ["harbour"]', 'lighthouse keeper -> ["note:1"]', "zebra -> []"]
    # another agent's search does not see them
    status, out, _ = run(tk, "tcall", "memory_search", '{"query": "violet boats"}')
    assert (status, out) == (0, "ok []\n")


@pytest.mark.model
@pytest.mark.timeout(60)
def test_a_tool_dropped_into_a_plugin_folder_is_found(tk):
    folder = Path(tk.config.plugins.paths[0]) / "tools"
    (folder / "late.py").write_text(textwrap.dedent('''
        from aiosh.kernel.tools import tool

        @tool(name="late_tool")
        def late_tool(x: int) -> int:
            """Added while the kernel runs."""
            return x * 2
    '''))
    try:
        status, out, _ = run(tk, "tcall", "late_tool", '{"x": 21}')
        assert (status, out) == (0, "ok 42\n")
    finally:
        (folder / "late.py").unlink()


@pytest.mark.model
@pytest.mark.timeout(60)
def test_a_hung_tool_times_out_without_stalling_others(tk):
    from aiosh.kernel.streams import Pipe

    t0 = time.monotonic()
    out = Pipe()
    hung = tk.spawn("tmany", ["4", "hang", '{"seconds": 3}'], stdout=out, cwd=tk.test_cwd)
    # meanwhile other agents and tools run normally
    status, text, _ = run(tk, "tcall", "calculator", '{"expression": "1+1"}')
    assert (status, text) == (0, "ok 2\n")
    assert tk.wait(hung, 20) == (hung, 0)
    lines = out.read_all().splitlines()
    assert len(lines) == 4 and all(ln.startswith("ToolError hang: timed out after 0.3 s") for ln in lines), lines
    assert time.monotonic() - t0 < 5  # nobody waited for the 3-second sleeps
    rows = tool_syscalls(tk, hung)
    assert len(rows) == 4 and all(r["outcome"].startswith("error: hang: timed out") for r in rows)


@pytest.mark.model
@pytest.mark.timeout(60)
def test_per_tool_concurrency_limit(tk):
    status, out, _ = run(tk, "tmany", "3", "slow1", '{"seconds": 0.3}')
    assert status == 0
    starts = sorted(float(line.split()[1]) for line in out.splitlines())
    assert len(starts) == 3
    assert starts[1] - starts[0] >= 0.28 and starts[2] - starts[1] >= 0.28  # one at a time


@pytest.mark.model
@pytest.mark.timeout(90)
def test_call_tool_constrains_the_model(tk):
    # only the calculator, no answer allowed: even the 135M model must write a well-formed calculator call
    status, out, pid = run(tk, "choose", "calculator", "no", "What is 12 times 7?", timeout=60)
    assert status == 0, out
    got = json.loads(_json_line(out))  # (stderr shares the pipe: a loaded machine may add a watchdog line)
    assert got["tool"] == "calculator" and set(got["args"]) == {"expression"}
    assert isinstance(got["args"]["expression"], str) and len(got["args"]["expression"]) <= 200
    assert json.loads(got["raw"]) == {"tool": "calculator", "args": got["args"]}
    llm = tk.storage.query("SELECT outcome, tokens_out FROM syscalls WHERE run = ? AND pid = ? AND kind = 'llm'",
                           (tk.storage.run, pid))
    assert llm[0]["outcome"] == "ok" and 0 < llm[0]["tokens_out"] <= 120
    # the default is every tool the agent may call, plus an answer
    status, out, _ = run(tk, "choose", "-", "yes", "What is the capital of France?", timeout=60)
    got = json.loads(_json_line(out))
    assert status == 0 and (got["answer"] is not None) != (got["tool"] is not None)
    with pytest.raises(AssertionError):
        assert run(tk, "choose", "nosuch", "yes", "x")[0] == 0


@pytest.mark.model
def test_tools_builtin_lists_schemas(tk):
    from aiosh.commands.tools import UsageError, tools

    text = tools(tk, [])
    assert "calculator(expression: string)" in text and "hang(seconds?: number = 3.0)" in text
    assert "write_file(path: string, content: string, append?: boolean = false)  [irreversible]" in text
    one = tools(tk, ["read_file"])
    assert one.startswith("read_file(path: string, max_chars?: integer = 20000)\n  Read a text file")
    assert '"additionalProperties": false' in one and "from aiosh.plugins.tools.files" in one
    with pytest.raises(UsageError, match="nope: no such tool"):
        tools(tk, ["nope"])
