"""Builtins that look into the kernel: `ps`, `sched`, `free`.

Each is a plain function of (kernel, argv) that returns text and a status, so it is testable without a shell;
`register(registry, kernel_getter)` wraps them as shell builtins.
"""

from __future__ import annotations

import json
import time as _time
from collections.abc import Callable, Sequence
from dataclasses import asdict, fields
from typing import Any

from aiosh.kernel.proc import Limits, ProcInfo

from .argv import Syntax, UsageError, opt, option_rows
from .catalog import OBSERVE_HELP, TIME_HELP

UNKNOWN = "?"  # a figure the kernel cannot know (the KV a remote server holds): never shown as 0
COLUMNS: dict[str, tuple[str, Callable[[ProcInfo], object], str]] = {
    # name: (header, value, alignment)
    "pid": ("PID", lambda p: p.pid, ">"),
    "ppid": ("PPID", lambda p: p.ppid, ">"),
    "pgid": ("PGID", lambda p: p.pgid, ">"),
    "stat": ("STAT", lambda p: p.state + ("<" if p.nice < 0 else "N" if p.nice > 0 else "") + ("+" if p.boosted else ""), "<"),
    "ni": ("NI", lambda p: p.nice, ">"),
    "pri": ("PRI", lambda p: p.pri, ">"),
    "class": ("CLASS", lambda p: p.sched_class, "<"),
    "wchan": ("WCHAN", lambda p: p.wchan or "-", "<"),
    # Tokens are two facts, named the same in ps, top and logs: IN (prompt tokens evaluated; a reused prefix
    # costs nothing and is not counted) and OUT (tokens generated). `tokens` is their sum, headed IN+OUT.
    "in": ("IN", lambda p: p.tokens_in, ">"),
    "out": ("OUT", lambda p: p.tokens_out, ">"),
    "tokens": ("IN+OUT", lambda p: p.tokens_in + p.tokens_out, ">"),
    "kv": ("KV", lambda p: UNKNOWN if p.kv_tokens is None else p.kv_tokens, ">"),
    "kvmb": ("KVMIB", lambda p: UNKNOWN if p.kv_bytes is None else f"{p.kv_bytes / 2**20:.1f}", ">"),
    "swap": ("SWAP", lambda p: _bytes(p.swapped_bytes), ">"),
    "sw": ("CSW", lambda p: p.switches, ">"),
    "sys": ("SYSC", lambda p: p.syscalls, ">"),
    "time": ("TIME", lambda p: _clock(p.decode_s, frac=True), ">"),
    "elapsed": ("ELAPSED", lambda p: _clock(p.elapsed), ">"),
    "status": ("STATUS", lambda p: "-" if p.status is None else p.status, ">"),
    "backend": ("BACKEND", lambda p: p.backend, "<"),
    "cmd": ("CMD", lambda p: p.cmd, "<"),
}
DEFAULT_COLUMNS = ["pid", "ppid", "stat", "ni", "pri", "in", "out", "kv", "time", "elapsed", "cmd"]
REMOTE_DEFAULT_COLUMNS = ["pid", "ppid", "stat", "ni", "pri", "in", "out", "kv", "time", "elapsed", "backend", "cmd"]
ALIASES = {"tin": "in", "tout": "out"}  # the names these columns had before
# A key of None is unknown (KV of an agent on a remote backend): such rows sort last in either direction.
SORT_KEYS: dict[str, Callable[[ProcInfo], Any]] = {  # numbers or strings, None when unknown
    "pid": lambda p: p.pid, "ppid": lambda p: p.ppid, "ni": lambda p: p.nice, "pri": lambda p: p.pri,
    "tokens": lambda p: p.tokens_in + p.tokens_out, "in": lambda p: p.tokens_in, "out": lambda p: p.tokens_out,
    "kv": lambda p: p.kv_tokens, "time": lambda p: p.decode_s,
    "elapsed": lambda p: p.elapsed, "stat": lambda p: p.state, "cmd": lambda p: p.cmd, "swap": lambda p: p.swapped_bytes,
    "backend": lambda p: p.backend,
}


def _clock(seconds: float, frac: bool = False) -> str:
    m, s = divmod(max(0.0, seconds), 60)
    h, m = divmod(int(m), 60)
    sec = f"{s:05.2f}" if frac else f"{int(s):02d}"
    return f"{h}:{m:02d}:{sec}" if h else f"{m}:{sec}"


def _bytes(n: float) -> str:
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


def _table(rows: list[list[str]], aligns: list[str]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(aligns))]
    lines = []
    for r in rows:
        cells = [f"{c:{a}{w}}" if i < len(r) - 1 or a == ">" else c for i, (c, a, w) in enumerate(zip(r, aligns, widths))]
        lines.append(" ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def _remote_pools(kernel) -> list:
    """The kernel's remote backends (pools of OpenAI-compatible servers); [] for a local-only kernel."""
    backends = getattr(kernel, "backends", None)
    return list(getattr(backends, "pools", None) or ())


def _sorted(procs: list[ProcInfo], key: Callable[[ProcInfo], Any], reverse: bool) -> list[ProcInfo]:
    known = [p for p in procs if key(p) is not None]
    unknown = [p for p in procs if key(p) is None]
    return sorted(known, key=key, reverse=reverse) + unknown


def _columns(value: str) -> list[str]:
    cols = [ALIASES.get(c, c) for c in (c.strip().lower() for c in value.split(",")) if c]
    bad = [c for c in cols if c not in COLUMNS]
    if bad:
        raise UsageError(f"-o: unknown column '{bad[0]}' (known: {', '.join(COLUMNS)})")
    return cols


def _sort_key(value: str) -> str:
    if value.lstrip("-+").lower() not in SORT_KEYS:
        raise UsageError(f"--sort: unknown column '{value}' (known: {', '.join(SORT_KEYS)})")
    return value


def _pids(value: str) -> set[int]:
    try:
        return {int(x) for x in value.split(",") if x}
    except ValueError:
        raise UsageError(f"-p: invalid process id '{value}'") from None


PS = Syntax((
    opt("-f", dest="tree", help="the process tree: children indented under their parent (PPID)"),
    opt("-o", dest="cols", metavar="COL,...", type=_columns, missing="missing argument",
        help="these columns, in this order"),
    opt("--sort", metavar="[-]COL", type=_sort_key, missing="missing argument",
        help="sort by a column (- descending); " + ", ".join(SORT_KEYS)),
    opt("-p", dest="pids", metavar="PID,...", type=_pids, missing="missing argument",
        help="only these processes (agents, and the shell's own: `{ ...; } &` jobs, programs)"),
    opt("--json", dest="as_json", help="one JSON array of every field, for scripts"),
), end_of_options=False)


def ps(kernel, argv: list[str], extra: Sequence[ProcInfo] = ()) -> str:
    """`ps [-f] [-o COLS] [--sort [-]COL] [-p PID[,PID]] [--json]`: the process table.

    The default columns gain BACKEND when the kernel has remote backends; KV is "?" for an agent on a remote
    backend (the server holds its KV)."""
    args = PS.parse(argv)
    if args.operands:
        raise UsageError(f"{args.operands[0]}: unknown option")
    cols: list[str] = args.values["cols"] or list(REMOTE_DEFAULT_COLUMNS if _remote_pools(kernel) else DEFAULT_COLUMNS)
    tree, as_json = args.values["tree"], args.values["as_json"]
    sort: str | None = args.values["sort"]
    pids: set[int] | None = args.values["pids"]
    procs = kernel.ps()
    if pids is not None:
        # `-p` also finds the shell's own processes (a `{ …; } &` job, a program from PATH) by the pid `[1] PID` gave
        procs = [p for p in [*procs, *extra] if p.pid in pids]
    if sort:
        procs = _sorted(procs, SORT_KEYS[sort.lstrip("-+").lower()], sort.startswith("-"))
    if as_json:
        return json.dumps([_jsonable(p) for p in procs]) + "\n"
    if tree:
        procs = _tree_order(procs)
    depth = _depths(procs) if tree else {}
    rows = [[COLUMNS[c][0] for c in cols]]
    for p in procs:
        row = []
        for c in cols:
            val = str(COLUMNS[c][1](p))
            if c == "cmd" and tree:
                val = "  " * depth.get(p.pid, 0) + ("\\_ " if depth.get(p.pid, 0) else "") + val
            row.append(val)
        rows.append(row)
    return _table(rows, [COLUMNS[c][2] for c in cols])


def _jsonable(p: ProcInfo) -> dict:
    d = asdict(p)
    d["cmd"] = p.cmd
    d["argv"] = list(p.argv)
    return d


def _tree_order(procs: list[ProcInfo]) -> list[ProcInfo]:
    by_parent: dict[int, list[ProcInfo]] = {}
    pids = {p.pid for p in procs}
    for p in procs:
        by_parent.setdefault(p.ppid if p.ppid in pids else 0, []).append(p)
    out: list[ProcInfo] = []

    def walk(ppid: int) -> None:
        for child in by_parent.get(ppid, []):
            out.append(child)
            walk(child.pid)

    walk(0)
    return out


def _depths(procs: list[ProcInfo]) -> dict[int, int]:
    parent = {p.pid: p.ppid for p in procs}
    depth: dict[int, int] = {}
    for p in procs:
        d, cur = 0, p.ppid
        while cur in parent and d < 64:
            d, cur = d + 1, parent[cur]
        depth[p.pid] = d
    return depth


SCHED = Syntax((opt("-l", "--list", dest="list", help="list the scheduling policies"),))


def _policy_param(kv: str) -> tuple[str, float]:
    """One `key=value` of `sched POLICY key=value …`: the policy's parameters are numbers."""
    key, sep, val = kv.partition("=")
    if not sep:
        raise UsageError(f"{kv}: expected key=value")
    try:
        return key, float(val)
    except ValueError:
        raise UsageError(f"{kv}: value must be a number") from None


def sched(kernel, argv: list[str]) -> str:
    """`sched` shows the policy; `sched POLICY [key=value …]` switches it; `sched -l` lists policies."""
    from aiosh.kernel.scheduler import available_policies

    if argv and argv[0] == "engine":
        return _sched_engine(kernel, argv[1:])
    args = SCHED.parse(argv)
    if args.values["list"]:
        pols = available_policies(extra_paths=list(kernel.config.plugins.paths))
        return "".join(f"{name:10} {cls.description}\n" for name, cls in sorted(pols.items()))
    if args.operands:
        policy, *pairs = args.operands
        params = dict(_policy_param(kv) for kv in pairs)
        try:
            kernel.set_policy(policy, **params)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    d = kernel.policy.describe()
    name = d.get("policy", kernel.policy.name)
    extra = " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in d.get("params", {}).items())
    st = kernel.local.stats
    s = kernel.local.settings
    return (f"policy: {name}{(' ' + extra) if extra else ''} ({d.get('description', '')})\n"
            f"slots: {st.slots_busy}/{st.slots} busy  max_batch: {s.effective_max_batch}  "
            f"batch_tokens: {s.batch_tokens}\n"
            f"preemptions: {st.preemptions} (swapped out {st.swaps_out}, in {st.swaps_in}, recomputed {st.recomputes})\n"
            + _engine_line(kernel.engine_info())
            + (_backends_table(kernel) if _remote_pools(kernel) else ""))


def _engine_line(e) -> str:
    """The engine process: pid, state, restarts, RSS; the extra-buffers decision; the last error."""
    pid = str(e.pid) if e.pid else "-"
    rss = _bytes(e.rss_bytes) if e.rss_bytes else "-"
    out = (f"engine: {e.state}  pid: {pid}  restarts: {e.restarts}  rss: {rss}\n"
           f"extra buffer types: {e.extra_buffers}\n")
    if e.last_error:
        out += f"engine error: {e.last_error}\n"
    return out


def _engine_start(kernel) -> str:
    kernel.engine_start()
    return f"engine: {kernel.engine_info().state}\n"


def _engine_restart(kernel) -> str:
    kernel.engine_restart()
    return "engine: restarting\n"


ENGINE_ACTIONS: dict[str, Callable[[Any], str]] = {"start": _engine_start, "restart": _engine_restart}


def _sched_engine(kernel, argv: list[str]) -> str:
    """`sched engine`: its state and the end of llama.cpp's log; `sched engine ACTION` (ENGINE_ACTIONS)."""
    if len(argv) == 1 and argv[0] in ENGINE_ACTIONS:
        return ENGINE_ACTIONS[argv[0]](kernel)
    if argv:
        raise UsageError(f"engine {' '.join(argv)}: expected 'sched engine [{'|'.join(ENGINE_ACTIONS)}]'")
    e = kernel.engine_info()
    out = _engine_line(e)
    if e.log_path:
        out += f"log: {e.log_path}\n"
        out += "".join(f"  {line}\n" for line in kernel.engine_log(10))
    return out


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}ms"


def _backends_table(kernel) -> str:
    """One row per server (the local engine first): health, its pool's queue, requests in flight, TTFT, tok/s."""
    rows = list(kernel.backends.stats())
    errors = any(not b.healthy and b.last_error for b in rows)
    table = [["NAME", "POOL", "HEALTH", "QUEUE", "RUN", "TTFT", "TOK/S", "REQS", "ERRS", *(["ERROR"] if errors else [])]]
    for b in rows:
        table.append([
            b.name, b.pool, "ok" if b.healthy else "DOWN", str(b.queued), f"{b.in_flight}/{b.max_concurrent}",
            _ms(b.ttft_s), f"{b.tokens_per_s:.1f}", str(b.requests), str(b.errors),
            *([b.last_error.replace("\n", " ") if not b.healthy else ""] if errors else []),
        ])
    return "backends:\n" + _table(table, ["<", "<", "<", ">", ">", ">", ">", ">", ">", *(["<"] if errors else [])])


FREE = Syntax((opt("-b", dest="bytes", help="figures in bytes"),), end_of_options=False)


def free(kernel, argv: list[str]) -> str:
    """`free [-b]`: KV cache and memory use, like free(1)."""
    args = FREE.parse(argv)
    if args.operands:
        raise UsageError(f"{args.operands[0]}: unknown option")
    raw = args.values["bytes"]
    st = kernel.local.stats
    per = st.kv_bytes_per_token
    fmt = (lambda n: str(n)) if raw else _bytes
    rss = _rss_bytes()
    rows = [["", "total", "used", "idle-cache", "free"],
            ["kv-cells", str(st.kv_capacity), str(st.kv_used - st.kv_cached_idle), str(st.kv_cached_idle),
             str(st.kv_capacity - st.kv_used)],
            ["kv-bytes", fmt(st.kv_capacity * per), fmt((st.kv_used - st.kv_cached_idle) * per),
             fmt(st.kv_cached_idle * per), fmt((st.kv_capacity - st.kv_used) * per)],
            ["swapped", "-", fmt(st.swapped_bytes), "-", "-"],
            ["model", "-", fmt(kernel.local.model_info.size_bytes), "-", "-"],
            ["process", "-", fmt(rss) if rss else "?", "-", "-"]]
    eng = kernel.engine_info()
    if eng.pid or eng.state != "ready":
        rows.append(["engine", "-", fmt(eng.rss_bytes) if eng.rss_bytes else "-", "-", "-"])
    out = _table(rows, ["<", ">", ">", ">", ">"])
    if _remote_pools(kernel):
        for b in kernel.backends.stats():
            if b.kind != "local":
                out += f"remote {b.name} ({b.model} at {b.url}): KV unknown (held by the server)\n"
    return out


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            import os

            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _bash_time(seconds: float) -> str:
    m, s = divmod(seconds, 60)
    return f"{int(m)}m{s:.3f}s"


def time_command(ctx, kernel) -> int:
    """`time COMMAND…`: run it, then report wall time, model decode time and tokens of the agents it started."""
    import time as _time

    if not ctx.args:
        return ctx.usage_error("missing command")
    first = kernel.last_pid + 1
    t0 = _time.monotonic()
    status = ctx.run(ctx.args)
    wall = _time.monotonic() - t0
    tin, tout, decode = kernel.usage(range(first, kernel.last_pid + 1))
    ctx.write_err(f"\nreal\t{_bash_time(wall)}\ndecode\t{_bash_time(decode)}\ntokens\t{tin} in, {tout} out\n")
    return status


def kernel_timing(handle) -> Callable[[], str]:
    """For the `time` keyword: the decode time and tokens of the agents started from now until the call (a
    `boot.KernelHandle`: a kernel that has not started has run no agent, and is not started for this)."""
    first = handle.get().last_pid + 1 if handle.started else 1

    def finish() -> str:
        tin = tout = 0
        decode = 0.0
        if handle.started:
            kernel = handle.get()
            tin, tout, decode = kernel.usage(range(first, kernel.last_pid + 1))
        return f"decode\t{_bash_time(decode)}\ntokens\t{tin} in, {tout} out\n"

    return finish


HELP = OBSERVE_HELP


def register(registry, kernel_getter: Callable[[], object]) -> None:
    """Add ps/sched/free to a shell's builtin registry; `kernel_getter` returns the running Kernel."""

    def wrap(fn: Callable[[object, list[str]], str]):
        def builtin(ctx) -> int:
            try:
                ctx.write(fn(kernel_getter(), ctx.args))
            except UsageError as exc:
                return ctx.usage_error(str(exc))
            return 0

        return builtin

    for name, fn in (("sched", sched), ("free", free)):
        registry.register(name, wrap(fn), *HELP[name])

    def ps_builtin(ctx) -> int:
        try:
            ctx.write(ps(kernel_getter(), ctx.args, extra=shell_procs(ctx.interp.jobs)))
        except UsageError as exc:
            return ctx.usage_error(str(exc))
        return 0

    registry.register("ps", ps_builtin, *HELP["ps"], details=ps_details)
    registry.register("time", lambda ctx: time_command(ctx, kernel_getter()), *TIME_HELP)



def shell_procs(table) -> list[ProcInfo]:
    """The shell's own live processes (shell code of background jobs, programs from PATH) as rows for `ps -p`."""
    out: list[ProcInfo] = []
    now = _time.time()
    for job in list(table.jobs.values()):
        for p in list(job.procs):
            if p.kind not in ("thread", "host") or p.finished:
                continue
            values: dict[str, Any] = {f.name: 0 for f in fields(ProcInfo)}  # figures the kernel keeps: none
            values.update(pid=p.pid, ppid=0, pgid=job.pgid, agent=p.text, argv=(), state="T" if p.stopped else "R",
                          wchan="", nice=0, sched_class="-", pri=0, boosted=False, created=now, started=now,
                          ended=0.0, status=None, limits=Limits(0, 0.0, 0), recent_output="",
                          backend="shell" if p.kind == "thread" else "host")
            out.append(ProcInfo(**values))
    return out


def ps_details() -> str:
    """`help ps`: what each option and column means (the columns come from the table ps draws with)."""
    lines = [
        "Options:",
        *option_rows(PS.options, 14),
        "Columns (-o):",
    ]
    meaning = {
        "pid": "process id (never reused in a session)", "ppid": "parent (0 = the shell)",
        "pgid": "process group (a job; kill -- -PGID)", "stat": "R running, S waiting, T stopped, Z exited; "
        "< nice below 0, N above, + boosted", "ni": "nice (-20..19)", "pri": "scheduling priority",
        "class": "interactive, normal, batch, idle", "wchan": "what it waits for (slot, llm, child, stdin, tool…)",
        "tokens": "tokens in + out", "tin": "prompt tokens", "tout": "generated tokens",
        "kv": "KV cells held (? = on a remote server)", "kvmb": "KV memory in MiB", "swap": "KV swapped out to RAM",
        "sw": "context switches", "sys": "syscalls made", "time": "model decode time", "elapsed": "wall time",
        "status": "exit status once ended", "backend": "where its LLM calls go", "cmd": "the command",
    }
    for key, (head, _fn, _align) in COLUMNS.items():
        lines.append(f"  {key:<8} {head:<8} {meaning.get(key, '')}".rstrip())
    lines.append("Default: " + ",".join(DEFAULT_COLUMNS))
    return "\n".join(lines)
