"""The agent API: how plugin code declares an agent, and the context that is its only door to the kernel.

An agent is an `async def main(ctx) -> int | None` registered with `@agent(...)`. It runs as a process on the
kernel's event loop. Everything it does through the kernel — LLM calls, children, stdin/stdout — goes through
`ctx`, which records each call as a syscall, honours stop/continue, and refuses every call once the process was
killed. Signals arrive as `asyncio.CancelledError` at the agent's current await (catch it to handle TERM/INT/HUP;
`ctx.signal` says which one); an agent that returns after catching it chooses its own exit status.

The context holds no kernel: it reaches the managers through `Services` and makes every syscall through its
process's `Syscalls` (kernel/services.py), the one way of gate, record, wait channel and finish.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from .argspec import PER_CALL_KEYS, HelpRequested, Opt, UsageError, help_text, parse, usage_line
from .llmcall import LLMCall, build_request
from .memory import AgentMemory
from .proc import Limits, Process
from .requests import SCHED_CLASSES, GenResult
from .services import Call, LimitExceeded, LLMError, ProcessKilled, Services, Syscalls
from .streams import Pipe
from .tools import ToolChoice, ToolError, choice_grammar, parse_choice, tools_prompt

__all__ = ["AgentContext", "AgentSpec", "Child", "LimitExceeded", "LLMError", "ProcessKilled", "agent"]

AgentMain = Callable[["AgentContext"], Awaitable[int | None]]


INHERITED_OPTIONS = ("seed", "temperature", "top_k", "top_p", "min_p", "repeat_penalty", "max_tokens")


def least_favoured(a: str, b: str) -> str:
    """Of two scheduling classes, the one the scheduler favours less (a child never outranks its parent)."""
    rank = {c: i for i, c in enumerate(SCHED_CLASSES)}
    return a if rank.get(a, 1) >= rank.get(b, 1) else b


def inherit_options(parent: dict, asked: dict, backend: str) -> dict:
    """A child's run options: its parent's per-call options and backend, overridden by what the child asks —
    except `max_tokens`, which may only go down."""
    out = {k: v for k, v in parent.items() if k in INHERITED_OPTIONS}
    out["backend"] = backend
    out.update(asked)
    cap = parent.get("max_tokens")
    if cap:
        out["max_tokens"] = min(int(cap), int(asked.get("max_tokens") or cap))
    return out


def check_run_options(options: dict) -> None:
    """ValueError (one line) for a run option that could only fail later, inside the run."""
    for key in ("max_tokens", "seed", "top_k"):
        value = options.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or (value < 0 and key != "seed")):
            raise ValueError(f"{key.replace('_', '-')}: invalid number '{value}'")
    for key in ("temperature", "top_p", "min_p", "repeat_penalty"):
        value = options.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
            raise ValueError(f"{key.replace('_', '-')}: invalid number '{value}'")


@dataclass
class AgentSpec:
    """What the kernel knows about an agent type before running it."""

    name: str
    main: AgentMain
    description: str = ""
    usage: str = ""
    sched_class: str = "normal"  # the class it asks for (interactive | normal | batch | idle)
    # Capabilities it declares (tool:calculator, read:./, spawn …); None = undeclared: what the policy allows.
    needs: tuple[str, ...] | None = None
    module: str = ""
    # Declared options (None = the agent reads ctx.argv itself) and what its operands are ("[PROMPT...]").
    options: tuple[Opt, ...] | None = None
    operands: str = ""
    intermixed: bool = False  # options may follow operands (`chat hello -c`)
    # Whether it calls the model: a script or `-c` that names such an agent starts the engine at once, in the
    # background (as an interactive shell does), so its first LLM call does not wait for the whole load.
    uses_model: bool = True

    def help(self) -> str:
        """`NAME --help` and `help NAME`: usage, description, options, the run options."""
        return help_text(self.name, self.description, self.usage, self.options)

    def flags(self) -> dict[str, bool]:
        """Each declared spelling → whether it takes a value (for the shell, which skips them to find run
        options anywhere among an agent's options)."""
        return {f: o.takes_value for o in self.options or () for f in o.flags}


def agent(
    name: str, *, description: str = "", usage: str = "", sched_class: str = "normal",
    needs: tuple[str, ...] | list[str] | None = None, options: Sequence[Opt] | None = None, operands: str = "",
    intermixed: bool = False, uses_model: bool = True,
) -> Callable[[AgentMain], AgentSpec]:
    """Decorator: turn `async def main(ctx)` into an AgentSpec that plugin discovery finds.

    `needs` declares the capabilities the agent uses (least privilege: it never gets more, whatever the policy
    and the run allow); left out, it gets what the policy and the run allow. `options` (a list of `opt(...)`)
    and `operands` declare the command line: the kernel parses it before `main` runs (`ctx.args[dest]`,
    `ctx.operands`), answers `--help`, and ends a bad command line with one line and status 2. Without
    `options`, `main` gets the raw `ctx.argv` (and `--help` still prints what is declared). `uses_model=False`
    for an agent that never calls the model (a script naming it does not start the engine early)."""

    def wrap(fn: AgentMain) -> AgentSpec:
        doc = (fn.__doc__ or "").strip().splitlines()
        declared = None if options is None else tuple(options)
        text = usage or (usage_line(name, declared, operands) if declared is not None else "")
        main = fn if declared is None else _parsing(name, declared, text, fn, intermixed)
        return AgentSpec(
            name=name, main=main, description=description or (doc[0] if doc else ""), usage=text,
            sched_class=sched_class, needs=None if needs is None else tuple(needs), module=fn.__module__,
            options=declared, operands=operands, intermixed=intermixed, uses_model=uses_model,
        )

    return wrap


def _parsing(name: str, options: tuple[Opt, ...], usage: str, fn: AgentMain, intermixed: bool) -> AgentMain:
    """Wrap an agent's main: parse its argv by the declaration first (so no agent has its own argv loop)."""

    async def main(ctx: AgentContext) -> int | None:
        try:
            parsed = parse(options, ctx.argv, intermixed=intermixed)
        except HelpRequested:
            spec = ctx._services.agents.get(name)
            ctx.stdout.write(spec.help() if spec is not None else usage + "\n")
            return 0
        except UsageError as exc:
            ctx.stderr.write(f"{name}: {exc}" + (f" (usage: {usage})" if exc.show_usage else "") + "\n")
            return 2
        ctx.args, ctx.operands = parsed.values, parsed.operands
        for key in PER_CALL_KEYS:  # a child started with `--max-tokens 8` in its argv (map's ARGS, say)
            if key in parsed.run and ctx.options.get(key) is None:
                ctx.options[key] = parsed.run[key]
        return await fn(ctx)

    main.__name__ = getattr(fn, "__name__", "main")
    main.__doc__ = fn.__doc__
    return main



class AgentOutput:
    """An agent's stdout or stderr: writes go to the pipe and to the process's recent-output tail."""

    def __init__(self, pipe: Pipe, proc: Process, sc: Syscalls, tee: bool) -> None:
        self.pipe = pipe
        self._proc = proc
        self._sc = sc
        self._tee = tee

    def write(self, text: str) -> None:
        self._sc.check_alive()
        if text:
            if self._tee:
                self._proc.note_output(text)
            if not self.pipe.closed:
                self.pipe.write(text)

    def print(self, *args: object, sep: str = " ", end: str = "\n") -> None:
        self.write(sep.join(str(a) for a in args) + end)

    def flush(self) -> None:
        """Pipes carry text as soon as it is written; nothing is buffered here."""


class AgentInput:
    """An agent's stdin (reading waits in state S, wchan 'stdin')."""

    def __init__(self, pipe: Pipe | None, sc: Syscalls) -> None:
        self.pipe = pipe
        self._sc = sc

    async def read(self) -> str:
        """Everything until end of file."""
        if self.pipe is None:
            return ""
        async with self._sc.wchan("stdin"):
            return await self.pipe.aread_all()

    async def readline(self) -> str:
        if self.pipe is None:
            return ""
        async with self._sc.wchan("stdin"):
            return await self.pipe.areadline()

    def __aiter__(self) -> AsyncIterator[str]:
        return self._lines()

    async def _lines(self) -> AsyncIterator[str]:
        while line := await self.readline():
            yield line


@dataclass
class Child:
    """A child process as its parent sees it."""

    pid: int
    stdout: Pipe
    stderr: Pipe


class LLM:
    """`ctx.llm`: chat and completion calls, scheduled by the kernel token by token."""

    def __init__(self, ctx: AgentContext) -> None:
        self._ctx = ctx
        self.last: GenResult | None = None

    async def chat(self, messages: list[dict[str, str]] | str, **opts: object) -> str:
        """The whole reply to a chat (a string is one user message)."""
        return "".join([c async for c in self.stream_chat(messages, **opts)])

    async def complete(self, prompt: str, **opts: object) -> str:
        return "".join([c async for c in self.stream(prompt, **opts)])

    def stream_chat(self, messages: list[dict[str, str]] | str, **opts: object) -> AsyncIterator[str]:
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        return self._ctx._llm_call(list(messages), None, opts)

    def stream(self, prompt: str, **opts: object) -> AsyncIterator[str]:
        return self._ctx._llm_call(None, prompt, opts)

    async def call_tool(
        self, messages: list[dict[str, str]] | str, tools: list[str] | None = None, *, answer: bool = True,
        max_string: int = 200, max_answer: int = 300, **opts: object,
    ) -> ToolChoice:
        """Ask the model to pick a tool call or answer, with its reply constrained by a grammar.

        The grammar (GBNF, from the tools' JSON schemas through llama.cpp's converter, strings capped at
        `max_string`/`max_answer` characters) admits only `{"tool": NAME, "args": {...}}` for one of `tools`
        (default: every tool this agent may call; tools it may not call are left out) or, with `answer`,
        `{"answer": "..."}`; a system message listing the tools is put first. Returns a ToolChoice (`.tool`,
        `.args`, `.answer`, `.raw`); run the call with `ctx.tool(choice.tool, **choice.args)`. ToolError for an
        unknown tool name or a reply cut off by max_tokens. `opts` go to `chat` (temperature, seed, conversation…).
        """
        ctx = self._ctx
        services = ctx._services
        await services.tools.refresh(None if tools is None else list(tools))  # MCP servers start at first use
        known = services.tools.all()
        names = sorted(known) if tools is None else list(tools)
        for n in names:
            if n not in known:
                raise ToolError(f"{n}: no such tool")
        specs = [known[n] for n in names if services.access.permits(ctx.pid, f"tool:{n}")]
        # In a worker thread: llama.cpp's JSON-schema converter imports llama_cpp (over a second in a kernel process
        # that has not loaded it yet, the shipped one), and a converted grammar is tens of KB.
        grammar = await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(choice_grammar, specs, max_string=max_string, max_answer=max_answer,
                                    answer=answer))
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        msgs = [dict(m) for m in messages]
        guide = tools_prompt(specs, answer=answer or not specs)
        if msgs and msgs[0].get("role") == "system":
            msgs[0]["content"] = f"{msgs[0]['content']}\n\n{guide}"
        else:
            msgs.insert(0, {"role": "system", "content": guide})
        if "max_tokens" not in opts and not ctx.options.get("max_tokens"):
            opts["max_tokens"] = 384
        text = await self.chat(msgs, grammar=grammar, **opts)
        return parse_choice(text, [s.name for s in specs])

    async def history(self, session: str) -> list[dict[str, str]]:
        """The messages to continue a stored session with (send them + the new turn with `session=`)."""
        await self._ctx.syscalls.gate()
        return await self._ctx._services.context.history(self._ctx.syscalls, session)

    async def last_session(self, agent: str | None = None) -> str | None:
        """The most recently used session of an agent type (this one's by default), from any run."""
        await self._ctx.syscalls.gate()
        return await self._ctx._services.context.last_session(agent or self._ctx.syscalls.agent)


class AgentContext:
    """The only door from an agent to the kernel."""

    def __init__(
        self, services: Services, proc: Process, stdin: Pipe | None, stdout: Pipe, stderr: Pipe,
        cwd: str, env: dict[str, str], options: dict,
    ) -> None:
        self._services = services
        self.syscalls = Syscalls(proc, services.storage.save_syscall, cwd)  # gate, record, wchan, finish
        self.pid = proc.pid
        self.argv = list(proc.argv)
        self.cwd = cwd
        self.env = dict(env)
        self.options = dict(options)
        self.args: dict[str, Any] = {}  # declared options, parsed: each of its option's type (`@agent(options=...)`)
        self.operands: list[str] = list(proc.argv)  # the arguments after the options
        self.stdin = AgentInput(stdin, self.syscalls)
        self.stdout = AgentOutput(stdout, proc, self.syscalls, tee=True)
        self.stderr = AgentOutput(stderr, proc, self.syscalls, tee=True)
        self.llm = LLM(self)
        self.memory = AgentMemory(self.syscalls, services)
        self.signal: int = 0  # the last signal delivered (TERM, INT, HUP …), for handlers

    @property
    def ppid(self) -> int:
        return self.syscalls.ppid

    @property
    def nice(self) -> int:
        return self.syscalls.proc.sched.nice

    @property
    def sched_class(self) -> str:
        return self.syscalls.proc.sched.sched_class

    @property
    def limits(self) -> Limits:
        """This process's limits (tokens, time, KV; 0 = none)."""
        return self.syscalls.limits

    @property
    def run(self) -> int:
        """This kernel run's number in storage (pids restart each run; RUN.PID names a process for good)."""
        return self._services.storage.run

    # --- helpers ----------------------------------------------------------------------------------------------
    def print(self, *args: object, sep: str = " ", end: str = "\n") -> None:
        self.stdout.print(*args, sep=sep, end=end)

    def syscall(self, kind: str, detail: str = "", *, wchan: str | None = None,
                cancellable: bool = False) -> AbstractAsyncContextManager[Call]:
        """`async with ctx.syscall("kind", "detail", wchan=...) as call:` — one recorded syscall of this process
        (gate, record, wait channel, finish; set `call.outcome` to say how it ended). See Syscalls.call."""
        return self.syscalls.call(kind, detail, wchan=wchan, cancellable=cancellable)

    def tool_names(self) -> list[str]:
        """The names of the tools there are (built-in, plugins, MCP servers already known), sorted."""
        return sorted(self._services.tools.all())

    # --- syscalls ---------------------------------------------------------------------------------------------
    async def _llm_call(self, messages: list[dict[str, str]] | None, prompt: str | None,
                        opts: dict) -> AsyncIterator[str]:
        sc, services = self.syscalls, self._services
        await sc.gate()
        o = {**self.options, **opts}
        req = build_request(services, sc, self.options, opts, messages=messages, prompt=prompt)
        backend = str(o.get("backend") or sc.backend)  # the door names one per call
        # The context manager picks the conversation key (session = global, conversation = this process's) and
        # fits the messages into the window, compacting them if they grew too long.
        await services.vocabulary_ready(sc.backend)
        turn = await services.context.prepare(sc, req, o)
        rec = sc.record("llm", (req.messages[-1]["content"] if req.messages else req.prompt or ""))
        call = LLMCall(services.backends, services.track_call, sc, req, backend, rec)
        got: list[str] = []
        try:
            async for chunk in call:
                got.append(chunk)
                yield chunk
        except (asyncio.CancelledError, GeneratorExit):
            sc.finish(rec, "cancelled")
            services.context.finish(sc, turn, "".join(got), None, "cancelled")
            raise
        result = call.result
        assert result is not None
        self.llm.last = result
        # rec.tokens_in/out were charged step by step (prompt tokens evaluated, tokens generated): the same
        # counts the process and every reader of it have.
        sc.finish(rec, "ok" if not result.error else f"error: {result.error}", call.t_end)
        services.context.finish(sc, turn, result.text, result, rec.outcome)
        if result.finish_reason == "kv_limit":
            raise LimitExceeded("KV", sc.limits.max_kv)
        if result.error:
            raise LLMError(result.error)
        sc.check_token_limit()

    async def spawn(
        self, agent: str, argv: list[str] | None = None, *, stdin: Pipe | str | None = None,
        die_with_parent: bool = False, nice: int | None = None, options: dict | None = None,
        sched_class: str | None = None, limits: Limits | None = None, detached: bool = False,
    ) -> Child:
        """Start a child agent in this agent's process group; its stdout/stderr are pipes the parent reads.

        Needs the `spawn` capability (and `nice.lower` for a nice below its own); the child's capabilities are
        at most this agent's (a narrowing is audited). `options` are the child's run options (seed, temperature,
        max_tokens, allow, deny). A child inherits this agent's limits, class, nice and per-call options unless it
        asks for less — never more: its `max_tokens` and `limits` are at most this agent's, its class
        (`sched_class`, else its agent type's) at most as favoured. When a limit ends this agent its children end
        with it, unless started `detached`. PermissionError when refused."""
        services, parent = self._services, self.syscalls.proc
        async with self.syscall("spawn", " ".join([agent, *(argv or [])])) as call:
            access = services.access
            if not access.check(self.pid, "spawn", " ".join([agent, *(argv or [])])[:200]):
                call.outcome = "denied: spawn"
                raise PermissionError(f"spawn: {parent.agent}[{self.pid}] may not start agents")
            if nice is not None and nice < parent.sched.nice and not access.check(
                    self.pid, "nice.lower", f"{agent} at nice {nice} (own {parent.sched.nice})"):
                call.outcome = "denied: nice.lower"
                raise PermissionError(f"nice.lower: {parent.agent}[{self.pid}] may not start a child at nice "
                                      f"{nice} (its own is {parent.sched.nice})")
            if isinstance(stdin, str):
                text, stdin = stdin, Pipe("child stdin")
                stdin.write(text)
                stdin.close()
            out, err = Pipe(f"{agent} stdout"), Pipe(f"{agent} stderr")
            spec = services.agents.get(agent)
            klass = least_favoured(parent.sched.sched_class,
                                   sched_class or (spec.sched_class if spec else "normal"))
            own = limits or services.default_limits()
            try:
                pid = services.spawn(
                    agent, list(argv or []), stdin=stdin, stdout=out, stderr=err, ppid=self.pid, pgid=parent.pgid,
                    nice=parent.sched.nice if nice is None else nice, die_with_parent=die_with_parent,
                    options=inherit_options(self.options, options or {}, parent.backend),
                    cwd=self.cwd, env=self.env, sched_class=klass, limits=own.inherited(parent.limits),
                    detached=detached,
                )
            except Exception as exc:
                call.outcome = f"error: {exc}"
                raise
            call.outcome = f"ok: pid {pid}"
        return Child(pid=pid, stdout=out, stderr=err)

    async def wait(self, pid: int | None = None) -> tuple[int, int]:
        """Wait for a child (or any child) to end; returns (pid, status) and collects it."""
        async with self.syscall("wait", str(pid or "any"), wchan="child") as call:
            got = await self._services.await_child(self.syscalls.proc, pid)
            call.outcome = f"ok: {got[0]} status {got[1]}"
        return got

    async def sleep(self, seconds: float) -> None:
        """Sleep without holding anything; time spent stopped (T) does not count, as with a stopped process."""
        sc = self.syscalls
        remaining = seconds
        async with self.syscall("sleep", f"{seconds:g}", wchan="timer"):
            while remaining > 0:
                await sc.gate()  # while stopped, the clock does not run for this sleep
                t0 = time.monotonic()
                # Not asyncio.wait_for: on Python 3.11 it swallows a cancel (a TERM) that arrives in the same loop
                # turn as the STOP that ends its wait, and the sleep then ran to its end with status 0.
                waiter = asyncio.ensure_future(sc.proc.stopped.wait())
                try:
                    done, _ = await asyncio.wait({waiter}, timeout=remaining)
                finally:
                    waiter.cancel()
                if not done:
                    break
                remaining -= time.monotonic() - t0

    async def tool(self, name: str, /, **args: object) -> object:
        """Call a tool: access-checked, arguments validated against its schema, run in a thread under its timeout.

        Returns its result; raises ToolError (unknown tool, bad arguments, the tool failed or timed out) or
        PermissionError (a capability this agent lacks, a path outside its working folder, a refused
        confirmation). Recorded as a syscall of kind "tool"."""
        try:
            detail = f"{name} {json.dumps(args, ensure_ascii=False, default=str)}"
        except (TypeError, ValueError):
            detail = f"{name} {args!r}"
        async with self.syscall("tool", detail, wchan="tool", cancellable=True):
            return await self._services.tools.call(self.syscalls, name, dict(args))

    async def run_blocking(self, fn: Callable[..., object], *args: object, kind: str = "tool") -> object:
        """Run blocking work in the kernel's thread pool, never on the loop all agents share."""
        async with self.syscall(kind, getattr(fn, "__name__", "call"), wchan=kind):
            return await asyncio.get_running_loop().run_in_executor(self._services.pool, fn, *args)
