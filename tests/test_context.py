"""kernel.context: long conversations in a small window under both policies (truncate, summarize), KV reuse after
a compaction, compactions in the transcript, `chat --continue` / `--session` in the same run and in a later one."""

from __future__ import annotations

import json
import textwrap

import pytest
from aiosh.kernel.config import load_config
from aiosh.kernel.context import SUMMARY_PREFIX, rebuild
from aiosh.kernel.streams import Pipe

N_CTX = 512
TURNS = 30

AGENTS = textwrap.dedent('''
    import json
    from aiosh.kernel.agent import agent

    SYSTEM = "You are a terse assistant. Answer in a few words."

    @agent("longchat", description="many short turns in one conversation; prints per-turn token counts")
    async def longchat(ctx):
        n, policy, key = int(ctx.argv[0]), ctx.argv[1], ctx.argv[2]
        where = {"session": key[len("session:"):]} if key.startswith("session:") else {"conversation": key}
        messages = [{"role": "system", "content": SYSTEM}]
        stats = []
        for i in range(1, n + 1):
            letter = chr(65 + i % 26)
            messages.append({"role": "user", "content": f"Turn {i}: name an animal that starts with {letter}."})
            reply = await ctx.llm.chat(messages, max_tokens=16, temperature=0, context_policy=policy, **where)
            messages.append({"role": "assistant", "content": reply})
            r = ctx.llm.last
            stats.append([r.prompt_tokens, r.cached_tokens, r.finish_reason])
        ctx.print(json.dumps(stats))
        return 0

    @agent("history", description="prints the messages a session would continue with")
    async def history(ctx):
        ctx.print(json.dumps(await ctx.llm.history(ctx.argv[0])))
        return 0
''')


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ctx")
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CONFIG_HOME", str(tmp / "xdg-config"))
    mp.setenv("XDG_DATA_HOME", str(tmp / "xdg-data"))
    (tmp / "plugins").mkdir()
    (tmp / "plugins" / "ctxagents.py").write_text(AGENTS)
    cfg = load_config(cwd=tmp, overrides={
        "kernel": {"slots": 4, "kv_cells": 4096}, "model": {"n_ctx": N_CTX},
        "storage": {"path": str(tmp / "ctx.db")}, "plugins": {"paths": [str(tmp / "plugins")]},
    })
    yield cfg
    mp.undo()


@pytest.fixture(scope="module")
def k(env, kernel_factory):
    kern = kernel_factory(env)
    yield kern
    kern.shutdown()


def run_agent(k, name: str, argv: list[str], timeout: float = 120, **kw) -> tuple[int, int, str, str]:
    out, err = Pipe(), Pipe()
    pid = k.spawn(name, argv, stdout=out, stderr=err, **kw)
    got = k.wait(pid, timeout)
    assert got is not None, f"{name} did not finish in {timeout}s"
    return pid, got[1], out.read_all(), err.read_all()


# --- rebuilding a stored transcript (no model) --------------------------------------------------------------------

def row(role: str, content: str, meta: dict | None = None) -> dict:
    return {"role": role, "content": content, "meta": json.dumps(meta) if meta else None}


def test_rebuild_after_compactions():
    rows = [row("system", "S"), row("user", "u1"), row("assistant", "a1"), row("user", "u2"), row("assistant", "a2")]
    msgs, sys, summary, _ = rebuild(rows)
    assert [m["content"] for m in msgs] == ["S", "u1", "a1", "u2", "a2"] and sys == [msgs[0]] and summary is None
    rows += [row("compaction", "they said hello", {"policy": "summarize", "kept": 2, "summary": True,
                                                   "summary_role": "system"}),
             row("user", "u3"), row("assistant", "a3")]
    msgs, sys, summary, role = rebuild(rows)
    assert summary == "they said hello" and role == "system"
    assert msgs == [{"role": "system", "content": "S"}, {"role": "system", "content": SUMMARY_PREFIX + summary},
                    {"role": "user", "content": "u2"}, {"role": "assistant", "content": "a2"},
                    {"role": "user", "content": "u3"}, {"role": "assistant", "content": "a3"}]
    rows += [row("compaction", "dropped 2 message(s)", {"policy": "truncate", "kept": 2, "summary": True,
                                                        "summary_role": "system"}),
             row("user", "u4")]
    msgs, _, summary, _ = rebuild(rows)  # a truncation keeps the earlier summary
    assert summary == "they said hello"
    assert [m["content"] for m in msgs][2:] == ["u3", "a3", "u4"]


# --- the real model -----------------------------------------------------------------------------------------------

@pytest.mark.model
@pytest.mark.timeout(900)
def test_thirty_turns_in_a_small_window_under_both_policies(k):
    outs = {}
    pids = {}
    for policy in ("truncate", "summarize"):  # both at once: they share the engine's batches
        outs[policy] = Pipe()
        pids[policy] = k.spawn("longchat", [str(TURNS), policy, f"session:long-{policy}"], stdout=outs[policy],
                               stderr=Pipe())
    system = [{"role": "system", "content": "You are a terse assistant. Answer in a few words."}]
    sys_tokens = len(k.model.tokenize(k.model.template.render(system, add_generation_prompt=False)))
    for policy, pid in pids.items():
        got = k.wait(pid, 800)
        assert got == (pid, 0), policy
        stats = json.loads(outs[policy].read_all())
        assert len(stats) == TURNS
        assert all(p <= N_CTX - 16 for p, _, _ in stats)  # the prompt always left room for the reply
        compacted = [i for i in range(1, TURNS) if stats[i][0] < stats[i - 1][0]]
        assert compacted, f"{policy}: the history never outgrew the window?"
        for i in range(1, TURNS):
            prompt, cached, _ = stats[i]
            if i in compacted:
                # only the part the compaction changed is recomputed: the system prompt's KV stays
                assert cached >= sys_tokens, (policy, i, stats[i])
            else:
                assert cached >= stats[i - 1][0], (policy, i, stats[i])  # the whole earlier turn was reused
        rows = k.storage.query("SELECT content, meta FROM messages WHERE run = ? AND pid = ? AND role = 'compaction'",
                               (k.storage.run, pid))
        assert len(rows) == len(compacted)
        metas = [json.loads(r["meta"]) for r in rows]
        assert all(m["tokens_after"] < m["tokens_before"] for m in metas)
        users = k.storage.query("SELECT count(*) AS n FROM messages WHERE run = ? AND pid = ? AND role = 'user'",
                                (k.storage.run, pid))
        assert users == [{"n": TURNS}]  # every turn is in the transcript, compacted or not
        if policy == "summarize":
            assert all(m["policy"] == "summarize" and m["summary"] for m in metas), metas
            calls = k.storage.query("SELECT outcome FROM syscalls WHERE run = ? AND pid = ? AND kind = 'context'",
                                    (k.storage.run, pid))
            assert len(calls) == len(compacted) and all(c["outcome"] == "ok" for c in calls)
        else:
            assert all(m["policy"] == "truncate" for m in metas)
        # what the engine holds now is exactly what a later run rebuilds from the transcript
        key = f"long-{policy}"
        held = k.context._states[key].last
        rebuilt, *_ = rebuild(k.storage.conversation_rows(key))
        assert rebuilt == held


@pytest.mark.model
@pytest.mark.timeout(300)
def test_continue_and_session_resume_with_kv(k):
    opts = {"max_tokens": 12, "temperature": 0}
    pid1, st, out, err = run_agent(k, "chat", ["--session", "zed", "My name is Zed. Say hello."], options=opts)
    assert st == 0, err
    pid2, st, out, err = run_agent(k, "chat", ["--continue", "What is my name?"], options=opts)
    assert st == 0, err
    rows = k.storage.conversation_rows("zed")
    assert [(r["pid"], r["role"]) for r in rows] == [(pid1, "user"), (pid1, "assistant"), (pid2, "user"),
                                                     (pid2, "assistant")]
    first, second = json.loads(rows[1]["meta"]), json.loads(rows[3]["meta"])
    # the second chat saw the first turn (its prompt is longer than the new question) and reused its KV
    assert second["prompt_tokens"] > first["prompt_tokens"] + rows[2]["tokens"]
    assert second["cached_tokens"] >= first["prompt_tokens"]
    pid3, st, out, _ = run_agent(k, "chat", ["-s", "zed", "Thanks."], options=opts)
    assert st == 0 and len(k.storage.conversation_rows("zed")) == 6
    _, st, _, err = run_agent(k, "chat", ["--session"], options=opts)
    assert st == 2 and "missing name" in err


@pytest.mark.model
@pytest.mark.timeout(300)
def test_resume_in_a_later_run_from_storage(k, env, kernel_factory):
    if "zed" not in k.context._states:
        pytest.skip("needs test_continue_and_session_resume_with_kv")
    k.storage.flush()
    with kernel_factory(env) as k2:  # a second start of aiosh on the same database: a new run
        assert k2.storage.run == k.storage.run + 1
        opts = {"max_tokens": 8, "temperature": 0}
        pid, st, out, err = run_agent(k2, "chat", ["--continue", "Repeat my name."], options=opts)
        assert st == 0, err
        rows = k2.storage.conversation_rows("zed")
        assert len(rows) == 8 and rows[-1]["run"] == k2.storage.run and rows[-1]["pid"] == pid
        meta = json.loads(rows[-1]["meta"])
        assert meta["prompt_tokens"] > 60  # the three earlier turns came back from the transcript
        if "long-summarize" in k.context._states:  # a compacted session resumes from after its last compaction
            _, st, out, _ = run_agent(k2, "history", ["long-summarize"])
            msgs = json.loads(out)
            assert msgs[0]["role"] == "system" and msgs[1]["content"].startswith(SUMMARY_PREFIX)
            assert msgs == k.context._states["long-summarize"].last
            assert k2.context.count(msgs) < N_CTX


# --- a turn's tokens, without a kernel ----------------------------------------------------------------------------

class _Recording:
    """The model as the context manager sees it, noting the thread of every tokenisation."""

    def __init__(self, model) -> None:
        self._model = model
        self.threads: list[str] = []

    def tokens_of(self, rendered, **kw):
        import threading

        self.threads.append(threading.current_thread().name)
        return self._model.tokens_of(rendered, **kw)

    def __getattr__(self, name):
        return getattr(self._model, name)


def _context_manager(model):
    from types import SimpleNamespace as NS

    from aiosh.kernel.context import ContextManager

    local = NS(n_ctx=2048)
    backends = NS(resolve=lambda name: local, local=local)
    storage = NS(run=1, save_messages=lambda *a, **kw: None)
    config = NS(memory=NS(context_policy="truncate"))
    return ContextManager(_Recording(model), storage, config, backends, None, None)


def _syscalls():
    from types import SimpleNamespace as NS

    from aiosh.kernel.proc import Limits

    return NS(pid=7, agent="t", backend="local", limits=Limits())


def test_a_long_chat_is_tokenised_off_the_kernel_loop(model):
    import asyncio
    import threading

    from aiosh.kernel.context import OFF_LOOP_CHARS
    from aiosh.kernel.requests import GenRequest

    cm, sc = _context_manager(model), _syscalls()
    words = ["harbour", "violet", "lighthouse", "keeper", "boats", "painted", "quietly", "at", "dawn"]
    long_text = " ".join(words[i % len(words)] for i in range(OFF_LOOP_CHARS // 5))
    for text, off_loop in (("What is 12 times 7?", False), (long_text, True)):
        msgs = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": text}]
        req = GenRequest(messages=msgs, max_tokens=16)
        cm.model.threads.clear()

        async def turn(req: GenRequest) -> str:
            await cm.prepare(sc, req, {})
            return threading.current_thread().name

        loop_thread = asyncio.run(turn(req))
        assert req.tokens == model.tokens_of(model.render_chat(msgs))  # rendered and tokenised once, all of it
        assert len(cm.model.threads) == 1
        assert (cm.model.threads[0] != loop_thread) == off_loop, (len(text), cm.model.threads, loop_thread)


def test_a_continued_conversation_starts_with_the_tokens_held(model):
    import asyncio

    from aiosh.kernel.requests import GenRequest, GenResult

    cm, sc = _context_manager(model), _syscalls()
    opts = {"conversation": "c"}
    first = [{"role": "user", "content": "Name a fruit."}]
    req = GenRequest(messages=first, max_tokens=16)
    turn = asyncio.run(cm.prepare(sc, req, opts))
    assert req.conversation and req.tokens
    reply = "A ripe pear"
    # As sampled: the reply, a character a token (not as the text would be tokenised), then the end of the turn.
    generated = [*(t for ch in reply for t in model.tokenize(ch, special=False)), model.eos]
    assert generated[:-1] != model.tokenize(reply, special=False)
    cm.finish(sc, turn, reply, GenResult(text=reply, finish_reason="eos", tokens=generated), "ok")
    held = [*req.tokens, *generated[:-1]]  # what the engine's KV holds (the end-of-turn token was never decoded)
    second = [*first, {"role": "assistant", "content": reply}, {"role": "user", "content": "And a vegetable?"}]
    req2 = GenRequest(messages=second, max_tokens=16)
    asyncio.run(cm.prepare(sc, req2, opts))
    assert req2.tokens is not None and req2.tokens[: len(held)] == held
    assert model.detokenize(req2.tokens) == model.detokenize(model.tokens_of(model.render_chat(second)))
    # A reply cut by a stop string is not all in its tokens: the next turn is tokenised afresh.
    turn = asyncio.run(cm.prepare(sc, GenRequest(messages=second, max_tokens=16), opts))
    cm.finish(sc, turn, "A leek", GenResult(text="A leek", finish_reason="stop", tokens=[1, 2, 3]), "ok")
    third = [*second, {"role": "assistant", "content": "A leek"}, {"role": "user", "content": "Thanks."}]
    req3 = GenRequest(messages=third, max_tokens=16)
    asyncio.run(cm.prepare(sc, req3, opts))
    assert req3.tokens == model.tokens_of(model.render_chat(third))
