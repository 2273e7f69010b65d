"""The agent API: how plugin code declares an agent, and the context that is its only door to the kernel.

An agent is an `async def main(ctx) -> int | None` registered with `@agent(...)`. It runs as a process on the
kernel's event loop. Everything it does through the kernel — LLM calls, children, stdin/stdout — goes through
`ctx`, which records each call as a syscall, honours stop/continue, and refuses every call once the process was
killed. Signals arrive as `asyncio.CancelledError` at the agent's current await (catch it to handle TERM/INT/HUP;
`ctx.signal` says which one); an agent that returns after catching it chooses its own exit status.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .argspec import PER_CALL_KEYS, HelpRequested, Opt, UsageError, help_text, parse, usage_line
from .memory import AgentMemory
from .proc import Limits, Process, SyscallRecord
from .requests import GenRequest, GenResult, SamplingParams
from .streams import Pipe
from .tools import ToolChoice, ToolError, choice_grammar, parse_choice, tools_prompt

if TYPE_CHECKING:
    from .kernel import Kernel

AgentMain = Callable[["AgentContext"], Awaitable[int | None]]


CLASS_ORDER = ("interactive", "normal", "batch", "idle")  # most favoured first
INHERITED_OPTIONS = ("seed", "temperature", "top_k", "top_p", "min_p", "repeat_penalty", "max_tokens")


def least_favoured(a: str, b: str) -> str:
    """Of two scheduling classes, the one the scheduler favours less (a child never outranks its parent)."""
    rank = {c: i for i, c in enumerate(CLASS_ORDER)}
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


class ProcessKilled(Exception):
    """Raised by every context call of an agent that received SIGKILL."""


class LimitExceeded(Exception):
    """A per-agent limit (tokens, time, KV) was crossed; the agent ends with status 152."""

    def __init__(self, limit: str, value: float) -> None:
        super().__init__(f"{limit} limit ({value:g}) exceeded")
        self.limit = limit
        self.value = value


class LLMError(Exception):
    """An LLM call the engine refused or could not finish (bad request, engine failure)."""


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
            spec = ctx._kernel.agents.get(name)
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

    def __init__(self, pipe: Pipe, proc: Process, ctx: AgentContext, tee: bool) -> None:
        self.pipe = pipe
        self._proc = proc
        self._ctx = ctx
        self._tee = tee

    def write(self, text: str) -> None:
        self._ctx._check_alive()
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

    def __init__(self, pipe: Pipe | None, ctx: AgentContext) -> None:
        self.pipe = pipe
        self._ctx = ctx

    async def read(self) -> str:
        """Everything until end of file."""
        if self.pipe is None:
            return ""
        async with self._ctx._blocking("stdin"):
            return await self.pipe.aread_all()

    async def readline(self) -> str:
        if self.pipe is None:
            return ""
        async with self._ctx._blocking("stdin"):
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


_syscall_ids = itertools.count(1)


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
        return self._ctx._llm_call(GenRequest(messages=list(messages)), opts)

    def stream(self, prompt: str, **opts: object) -> AsyncIterator[str]:
        return self._ctx._llm_call(GenRequest(prompt=prompt), opts)

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
        kernel = ctx._kernel
        await kernel.tools.refresh(None if tools is None else list(tools))  # MCP servers start at first use
        known = kernel.tools.all()
        names = sorted(known) if tools is None else list(tools)
        for n in names:
            if n not in known:
                raise ToolError(f"{n}: no such tool")
        specs = [known[n] for n in names if kernel.access.permits(ctx.pid, f"tool:{n}")]
        grammar = choice_grammar(specs, max_string=max_string, max_answer=max_answer, answer=answer)
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
        await self._ctx._gate()
        return await self._ctx._kernel.context.history(self._ctx, session)

    async def last_session(self, agent: str | None = None) -> str | None:
        """The most recently used session of an agent type (this one's by default), from any run."""
        await self._ctx._gate()
        return await self._ctx._kernel.context.last_session(agent or self._ctx._proc.agent)


@dataclass
class _Blocking:
    ctx: AgentContext
    wchan: str
    prev: tuple[str, str] = field(default=("run", ""))

    async def __aenter__(self) -> None:
        p = self.ctx._proc
        self.prev = (p.activity, p.wchan)
        p.activity, p.wchan = self.wchan, self.wchan
        self.ctx._kernel._state_changed(p)

    async def __aexit__(self, *exc: object) -> None:
        p = self.ctx._proc
        p.activity, p.wchan = self.prev
        self.ctx._kernel._state_changed(p)


class AgentContext:
    """The only door from an agent to the kernel."""

    def __init__(
        self, kernel: Kernel, proc: Process, stdin: Pipe | None, stdout: Pipe, stderr: Pipe,
        cwd: str, env: dict[str, str], options: dict,
    ) -> None:
        self._kernel = kernel
        self._proc = proc
        self.pid = proc.pid
        self.argv = list(proc.argv)
        self.cwd = cwd
        self.env = dict(env)
        self.options = dict(options)
        self.args: dict[str, Any] = {}  # declared options, parsed: each of its option's type (`@agent(options=...)`)
        self.operands: list[str] = list(proc.argv)  # the arguments after the options
        self.stdin = AgentInput(stdin, self)
        self.stdout = AgentOutput(stdout, proc, self, tee=True)
        self.stderr = AgentOutput(stderr, proc, self, tee=True)
        self.llm = LLM(self)
        self.memory = AgentMemory(self)
        self.signal: int = 0  # the last signal delivered (TERM, INT, HUP …), for handlers

    @property
    def ppid(self) -> int:
        return self._proc.ppid

    @property
    def run(self) -> int:
        """This kernel run's number in storage (pids restart each run; RUN.PID names a process for good)."""
        return self._kernel.storage.run

    # --- helpers ----------------------------------------------------------------------------------------------
    def print(self, *args: object, sep: str = " ", end: str = "\n") -> None:
        self.stdout.print(*args, sep=sep, end=end)

    def _check_alive(self) -> None:
        if self._proc.killed:
            raise ProcessKilled(f"process {self.pid} was killed")

    async def _gate(self) -> None:
        """Every syscall passes here: a killed process may make none, a stopped one waits for CONT."""
        self._check_alive()
        resumed = self._proc.resumed
        if resumed is not None and not resumed.is_set():
            await resumed.wait()
            self._check_alive()

    def _blocking(self, wchan: str) -> _Blocking:
        return _Blocking(self, wchan)

    def _record(self, kind: str, detail: str = "") -> SyscallRecord:
        rec = SyscallRecord(id=next(_syscall_ids), pid=self.pid, kind=kind, detail=detail[:200],
                            t_queued=time.time())
        self._proc.syscall_count += 1
        self._proc.syscalls.append(rec)
        return rec

    def _finish(self, rec: SyscallRecord, outcome: str, t_finished: float = 0.0) -> None:
        """A syscall ended: its record is final and goes to storage (one record, committed at once)."""
        rec.t_finished, rec.outcome = t_finished or time.time(), outcome
        self._kernel.storage.save_syscall(rec)

    # --- syscalls ---------------------------------------------------------------------------------------------
    async def _llm_call(self, req: GenRequest, opts: dict) -> AsyncIterator[str]:
        await self._gate()
        kernel, proc = self._kernel, self._proc
        o = {**self.options, **opts}
        req.max_tokens = int(o.get("max_tokens") or kernel.config.sampling.max_tokens)
        if self.options.get("max_tokens"):  # the run's --max-tokens caps every call, whatever the call asks
            req.max_tokens = min(req.max_tokens, int(self.options["max_tokens"]))
        remaining = kernel._tokens_left(proc)
        if remaining is not None:
            req.max_tokens = max(1, min(req.max_tokens, remaining))
        s = kernel.config.sampling
        req.sampling = SamplingParams(
            temperature=float(o["temperature"]) if o.get("temperature") is not None else s.temperature,
            top_k=int(o.get("top_k", s.top_k)), top_p=float(o.get("top_p", s.top_p)),
            min_p=float(o.get("min_p", s.min_p)), repeat_penalty=float(o.get("repeat_penalty", s.repeat_penalty)),
            seed=int(o["seed"]) if o.get("seed") is not None else None,
        )
        req.stop = list(o.get("stop") or [])
        req.grammar = o.get("grammar")
        req.ignore_eos = bool(o.get("ignore_eos", False))
        req.sched = proc.sched
        req.max_kv = proc.limits.max_kv
        # The context manager picks the conversation key (session = global, conversation = this process's) and
        # fits the messages into the window, compacting them if they grew too long.
        await kernel.vocabulary_ready(proc.backend)
        turn = await kernel.context.prepare(self, req, o)
        rec = self._record("llm", (req.messages[-1]["content"] if req.messages else req.prompt or ""))
        handle = kernel.backends.submit(req, o.get("backend") or proc.backend)  # the door names one per call
        kernel.track_call(proc, rec, handle)  # tokens and start time charged to rec step by step
        proc.current_llm = handle
        got: list[str] = []
        async with self._blocking("llm"):
            try:
                async for chunk in handle.astream():
                    got.append(chunk)
                    if proc.resumed is not None and not proc.resumed.is_set():
                        await proc.resumed.wait()  # a token sampled before a STOP waits for CONT: none escapes
                    yield chunk
                result = await handle.await_result()
            except (asyncio.CancelledError, GeneratorExit):
                handle.cancel()
                self._finish(rec, "cancelled")
                kernel.context.finish(self, turn, "".join(got), None, "cancelled")
                raise
            finally:
                proc.current_llm = None
        self.llm.last = result
        proc.llm_tokens += result.completion_tokens
        wall = time.time() - time.monotonic()
        rec.t_started = (result.t_admit or result.t_end) + wall
        rec.t_first = (result.t_first + wall) if result.t_first else 0.0
        rec.t_queued = result.t_submit + wall
        # rec.tokens_in/out were charged step by step (prompt tokens evaluated, tokens generated): the same
        # counts the process and every reader of it have.
        self._finish(rec, "ok" if not result.error else f"error: {result.error}", result.t_end + wall)
        kernel.context.finish(self, turn, result.text, result, rec.outcome)
        if result.finish_reason == "kv_limit":
            raise LimitExceeded("KV", proc.limits.max_kv)
        if result.error:
            raise LLMError(result.error)
        kernel._check_token_limit(proc)

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
        await self._gate()
        rec = self._record("spawn", " ".join([agent, *(argv or [])]))
        rec.t_started = rec.t_queued
        access = self._kernel.access
        if not access.check(self.pid, "spawn", " ".join([agent, *(argv or [])])[:200]):
            self._finish(rec, "denied: spawn")
            raise PermissionError(f"spawn: {self._proc.agent}[{self.pid}] may not start agents")
        if nice is not None and nice < self._proc.sched.nice and not access.check(
                self.pid, "nice.lower", f"{agent} at nice {nice} (own {self._proc.sched.nice})"):
            self._finish(rec, "denied: nice.lower")
            raise PermissionError(f"nice.lower: {self._proc.agent}[{self.pid}] may not start a child at nice "
                                  f"{nice} (its own is {self._proc.sched.nice})")
        if isinstance(stdin, str):
            text, stdin = stdin, Pipe("child stdin")
            stdin.write(text)
            stdin.close()
        out, err = Pipe(f"{agent} stdout"), Pipe(f"{agent} stderr")
        parent = self._proc
        spec = self._kernel.agents.get(agent)
        klass = least_favoured(parent.sched.sched_class, sched_class or (spec.sched_class if spec else "normal"))
        cfg = self._kernel.config.limits
        own = limits or Limits(cfg.max_tokens, cfg.max_time, cfg.max_kv)
        try:
            pid = self._kernel.spawn(
                agent, list(argv or []), stdin=stdin, stdout=out, stderr=err, ppid=self.pid, pgid=parent.pgid,
                nice=parent.sched.nice if nice is None else nice, die_with_parent=die_with_parent,
                options=inherit_options(self.options, options or {}, parent.backend),
                cwd=self.cwd, env=self.env, sched_class=klass, limits=own.inherited(parent.limits),
                detached=detached,
            )
        except Exception as exc:
            self._finish(rec, f"error: {exc}")
            raise
        self._finish(rec, f"ok: pid {pid}")
        return Child(pid=pid, stdout=out, stderr=err)

    async def wait(self, pid: int | None = None) -> tuple[int, int]:
        """Wait for a child (or any child) to end; returns (pid, status) and collects it."""
        await self._gate()
        rec = self._record("wait", str(pid or "any"))
        rec.t_started = rec.t_queued
        async with self._blocking("child"):
            got = await self._kernel._await_child(self._proc, pid)
        self._finish(rec, f"ok: {got[0]} status {got[1]}")
        return got

    async def sleep(self, seconds: float) -> None:
        """Sleep without holding anything; time spent stopped (T) does not count, as with a stopped process."""
        await self._gate()
        rec = self._record("sleep", f"{seconds:g}")
        rec.t_started = rec.t_queued
        remaining = seconds
        async with self._blocking("timer"):
            while remaining > 0:
                await self._gate()  # while stopped, the clock does not run for this sleep
                t0 = time.monotonic()
                # Not asyncio.wait_for: on Python 3.11 it swallows a cancel (a TERM) that arrives in the same loop
                # turn as the STOP that ends its wait, and the sleep then ran to its end with status 0.
                waiter = asyncio.ensure_future(self._proc.stopped.wait())
                try:
                    done, _ = await asyncio.wait({waiter}, timeout=remaining)
                finally:
                    waiter.cancel()
                if not done:
                    break
                remaining -= time.monotonic() - t0
        self._finish(rec, "ok")

    async def tool(self, name: str, /, **args: object) -> object:
        """Call a tool: access-checked, arguments validated against its schema, run in a thread under its timeout.

        Returns its result; raises ToolError (unknown tool, bad arguments, the tool failed or timed out) or
        PermissionError (a capability this agent lacks, a path outside its working folder, a refused
        confirmation). Recorded as a syscall of kind "tool"."""
        await self._gate()
        try:
            detail = f"{name} {json.dumps(args, ensure_ascii=False, default=str)}"
        except (TypeError, ValueError):
            detail = f"{name} {args!r}"
        rec = self._record("tool", detail)
        rec.t_started = time.time()
        try:
            async with self._blocking("tool"):
                value = await self._kernel.tools.call(self, name, dict(args))
        except PermissionError as exc:
            self._finish(rec, f"denied: {exc}")
            raise
        except ToolError as exc:
            self._finish(rec, f"error: {exc}")
            raise
        except asyncio.CancelledError:
            self._finish(rec, "cancelled")
            raise
        self._finish(rec, "ok")
        return value

    async def run_blocking(self, fn: Callable[..., object], *args: object, kind: str = "tool") -> object:
        """Run blocking work in the kernel's thread pool, never on the loop all agents share."""
        await self._gate()
        rec = self._record(kind, getattr(fn, "__name__", "call"))
        rec.t_started = time.time()
        async with self._blocking(kind):
            try:
                value = await asyncio.get_running_loop().run_in_executor(self._kernel.pool, fn, *args)
            except Exception as exc:
                self._finish(rec, f"error: {exc}")
                raise
        self._finish(rec, "ok")
        return value
