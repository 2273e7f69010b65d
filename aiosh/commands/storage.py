"""Shell commands that read the store: `logs`, `last`, `history`, `memsearch`.

Each is a plain function `fn(kernel, argv, stdout, stderr) -> status`, where argv is the arguments after the
command's name. Errors are one line on stderr, `aiosh: NAME: …`; status 2 for bad arguments, 1 for "no such
process" or a database that cannot be read. Reads go through `kernel.storage.read` (a read-only connection, after
the records already queued are written), so they also see agents of earlier runs: a process is RUN:PID for good.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from aiosh.kernel.signals import signal_name
from aiosh.kernel.storage import StorageError
from aiosh.kernel.streams import Pipe

from .argv import Opt, Syntax, UsageError, count, opt
from .catalog import STORAGE_HELP, STORAGE_USAGE

__all__ = ["COMMANDS", "USAGE", "history", "last", "logs", "memsearch", "register"]

USAGE = STORAGE_USAGE
HELP = STORAGE_HELP


def _fail(stderr: Pipe, name: str, message: str, status: int) -> int:
    text = f"aiosh: {name}: {message}"
    if status == 2:
        text += f" (usage: {USAGE[name]})"
    try:
        stderr.write(text.replace("\n", " ") + "\n")
    except ValueError:
        pass
    return status


def _command(name: str) -> Callable[[Callable[..., str]], Callable[[Any, list[str], Pipe, Pipe], int]]:
    """Wrap fn(kernel, args) -> text: usage errors and storage errors become one line and a status."""

    def deco(fn: Callable[..., str]) -> Callable[[Any, list[str], Pipe, Pipe], int]:
        def run(kernel: Any, argv: list[str], stdout: Pipe, stderr: Pipe) -> int:
            storage = getattr(kernel, "storage", None)
            if name != "history" and (storage is None or not storage.enabled):
                return _fail(stderr, name, "storage is off (storage.enabled = false)", 1)
            try:
                text = fn(kernel, list(argv))
            except UsageError as exc:
                return _fail(stderr, name, str(exc), exc.status)
            except StorageError as exc:
                return _fail(stderr, name, str(exc), 1)
            if text:
                try:
                    stdout.write(text)
                except ValueError:  # the reader went away
                    pass
            return 0

        run.__name__ = fn.__name__
        run.__doc__ = fn.__doc__
        return run

    return deco


# --- argument helpers ---------------------------------------------------------------------------------------------

def _target(text: str, run: int | None, current: int) -> tuple[int, int]:
    """PID (this run, or --run N) or RUN:PID → (run, pid)."""
    if ":" in text:
        r, _, p = text.partition(":")
        return count("RUN")(r), count("PID")(p)
    return (run if run is not None else current), count("PID")(text)


# --- formatting ---------------------------------------------------------------------------------------------------

def _when(t: float | None, date: bool = True) -> str:
    if not t:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S", time.localtime(t))


def _dur(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _status(row: dict, current: int) -> str:
    st = row.get("status")
    if st is None:
        return "running" if row.get("run") == current else "lost"
    if st > 128 and st - 128 in range(1, 32):
        return f"{st} ({signal_name(st - 128)})"
    return str(st)


def _cmd(row: dict) -> str:
    try:
        argv = json.loads(row.get("argv") or "[]")
    except ValueError:
        argv = []
    return " ".join([row.get("agent") or "?", *argv])


def _table(rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [c.rjust(widths[i]) if i in right else (c if i == len(r) - 1 else c.ljust(widths[i]))
                 for i, c in enumerate(r)]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out) + "\n"


def _one_line(text: str, width: int = 0) -> str:
    flat = " ".join(text.split())
    return flat if not width or len(flat) <= width else flat[: width - 1] + "…"


# --- the commands -------------------------------------------------------------------------------------------------

def _run_of(storage: Any, pid: int, target: str) -> int:
    """A bare PID: this run's process if it has one, else the one earlier run that had that pid (pids restart
    each run); several earlier runs make it ambiguous, and RUN:PID says which."""
    if storage.query("SELECT 1 FROM processes WHERE run = ? AND pid = ? LIMIT 1", (storage.run, pid)):
        return storage.run
    runs = [row["run"] for row in storage.query(
        "SELECT DISTINCT run FROM processes WHERE pid = ? ORDER BY run DESC LIMIT 6", (pid,))]
    if len(runs) > 1:
        shown = ", ".join(f"{r}:{pid}" for r in runs[:5]) + (", …" if len(runs) > 5 else "")
        raise UsageError(f"{target}: ambiguous: pid {pid} ran in several runs ({shown}): give RUN:PID", 1)
    return runs[0] if runs else storage.run


def _run_opt() -> Opt:
    return opt("--run", metavar="N", type=count("--run"), missing="missing number", help="of run N")


def _n_opt(*flags: str) -> Opt:
    return opt(*flags, dest="n", metavar="N", type=count("-n"), missing="missing number", help="at most N")


LOGS = Syntax((opt("-m", "--messages", help="the transcript only"), opt("-s", "--syscalls", help="the syscalls only"),
               _run_opt()), intermixed=True)
LAST = Syntax((_n_opt("-n", "--number"), _run_opt()), end_of_options=False)
HISTORY = Syntax((_n_opt("-n"),), intermixed=True, end_of_options=False)
MEMSEARCH = Syntax((
    _n_opt("-n"), _run_opt(),
    opt("--pid", metavar="PID", missing="missing PID", help="PID or RUN:PID"),
    opt("--messages", dest="sources", const=("message",), default=("message", "memory"), help="messages only"),
    opt("--memories", dest="sources", const=("memory",), default=("message", "memory"), help="memories only"),
), intermixed=True)


def _no_operand(a: str) -> None:
    raise UsageError(f"{a}: unknown option" if a.startswith("-") else f"{a}: unexpected argument")


@_command("logs")
def logs(kernel: Any, args: list[str]) -> str:
    """`logs [-m|--messages] [-s|--syscalls] [--run N] PID|RUN:PID`: the record of one agent, its transcript and
    its syscalls, from this run or an earlier one."""
    storage = kernel.storage
    targets: list[str] = []

    def one(a: str) -> None:
        if targets:
            raise UsageError(f"{a}: only one process at a time")
        targets.append(a)

    parsed = LOGS.parse(args, one)
    run: int | None = parsed.values["run"]
    want_msgs, want_sys = parsed.values["messages"], parsed.values["syscalls"]
    if not parsed.operands:
        raise UsageError("which process? give PID or RUN:PID")
    target = parsed.operands[0]
    if run is not None and ":" in target:
        raise UsageError("give --run N or RUN:PID, not both")
    r, pid = _target(target, run, storage.run)
    if run is None and ":" not in target:
        r = _run_of(storage, pid, target)
    if not want_msgs and not want_sys:
        want_msgs = want_sys = True
    procs = storage.query("SELECT * FROM processes WHERE run = ? AND pid = ?", (r, pid))
    msgs = storage.query("SELECT id, conversation, role, content, tokens, t, meta FROM messages "
                         "WHERE run = ? AND pid = ? ORDER BY id", (r, pid)) if want_msgs else []
    calls = storage.query("SELECT * FROM syscalls WHERE run = ? AND pid = ? ORDER BY id", (r, pid)) \
        if want_sys else []
    if not procs and not msgs and not calls:
        raise UsageError(f"{target}: no such process" + (f" in run {r}" if ":" not in target else ""), 1)
    out: list[str] = []
    if procs:
        p = procs[0]
        live = _live_info(kernel, r, pid)
        tin = live.tokens_in if live else p["tokens_in"]
        tout = live.tokens_out if live else p["tokens_out"]
        switches = live.switches if live else p["switches"]
        state = live.state if live else p["state"]
        ended = live.ended if live else p["ended"]
        status = _status({**p, "status": live.status if live else p["status"]}, storage.run)
        elapsed = (ended or time.time()) - p["created"] if (ended or (live and r == storage.run)) else None
        out.append(f"{r}:{pid}  {_cmd(p)}")
        out.append(f"  state {state}  status {status}  ppid {p['ppid']}  nice {p['nice']}  class {p['class']}")
        out.append(f"  started {_when(p['started'] or p['created'])}  ended {_when(ended)}  elapsed {_dur(elapsed)}")
        out.append(f"  tokens {tin} in / {tout} out  decode {p['decode_s'] or 0:.2f}s  switches {switches}  "
                   f"syscalls {p['syscalls']}")
    if want_msgs:
        out.append("")
        out.append("transcript:" if msgs else "transcript: (none)")
        conv = None
        for m in msgs:
            if m["conversation"] != conv:
                conv = m["conversation"]
                label = f"session {conv}" if not str(conv).startswith("#") else "conversation " + conv[1:]
                out.append(f"  -- {label}")
            extra = ""
            if m["role"] == "assistant" and m["meta"]:
                meta = json.loads(m["meta"])
                if "prompt_tokens" in meta:
                    extra = f"  ({meta['prompt_tokens']} prompt, {meta.get('cached_tokens', 0)} cached, " \
                            f"{m['tokens']} out, {meta.get('finish', '')})"
                elif meta.get("outcome"):
                    extra = f"  ({meta['outcome']})"
            elif m["role"] == "compaction" and m["meta"]:
                meta = json.loads(m["meta"])
                extra = f"  ({meta.get('policy')}: {meta.get('folded')} folded, {meta.get('tokens_before')} → " \
                        f"{meta.get('tokens_after')} tokens)"
            body = m["content"].rstrip("\n").replace("\n", "\n    ")
            out.append(f"  [{_when(m['t'], date=False)}] {m['role']}{extra}:\n    {body}")
    if want_sys:
        out.append("")
        if not calls:
            out.append("syscalls: (none)")
        else:
            out.append("syscalls:")
            rows = [["ID", "KIND", "QUEUED", "WAIT", "TOTAL", "IN", "OUT", "OUTCOME", "DETAIL"]]
            for c in calls:
                started = c["t_started"] or c["t_finished"] or c["t_queued"]
                wait = max(0.0, started - c["t_queued"]) if c["t_queued"] else None
                total = (c["t_finished"] - c["t_queued"]) if c["t_finished"] and c["t_queued"] else None
                rows.append([str(c["id"]), c["kind"], _when(c["t_queued"], date=False),
                             f"{wait:.3f}" if wait is not None else "-", f"{total:.3f}" if total is not None else "-",
                             str(c["tokens_in"] or 0), str(c["tokens_out"] or 0), c["outcome"] or "-",
                             _one_line(c["detail"] or "", 50)])
            out.append(_table(rows, {0, 3, 4, 5, 6}).rstrip("\n"))
    return "\n".join(out).lstrip("\n") + "\n"


def _live_info(kernel: Any, run: int, pid: int) -> Any:
    """This run's process as the kernel sees it now (fresher tokens than the last stored state change)."""
    if run != kernel.storage.run or not hasattr(kernel, "proc"):
        return None
    try:
        return kernel.proc(pid)
    except Exception:  # noqa: BLE001 - collected, or never spawned in this run
        return None


@_command("last")
def last(kernel: Any, args: list[str]) -> str:
    """`last [-n N] [--run N]`: finished agents, the most recently started first, as Unix `last` lists logins
    (agents of a run that ended without recording their exit — aiosh was killed — show as "lost")."""
    storage = kernel.storage
    parsed = LAST.parse(args, _no_operand)
    n, run = parsed.values["n"] or 20, parsed.values["run"]
    where = "(status IS NOT NULL OR run != ?)"
    params: list[Any] = [storage.run]
    if run is not None:
        where += " AND run = ?"
        params.append(run)
    rows = storage.query(f"SELECT * FROM processes WHERE {where} "
                         "ORDER BY created DESC, run DESC, pid DESC LIMIT ?",
                         (*params, n))
    if not rows:
        return ""
    table = [["RUN:PID", "STATUS", "STARTED", "ENDED", "ELAPSED", "IN", "OUT", "CMD"]]
    for r in rows:
        end = r["ended"] or None
        table.append([f"{r['run']}:{r['pid']}", _status(r, storage.run), _when(r["started"] or r["created"]),
                      _when(end, date=False), _dur(end - r["created"]) if end else "-",
                      str(r["tokens_in"] or 0), str(r["tokens_out"] or 0), _one_line(_cmd(r), 60)])
    return _table(table, {4, 5, 6})


@_command("history")
def history(kernel: Any, args: list[str]) -> str:
    """`history [-n N]`: command lines of this and earlier runs, numbered, oldest first."""
    counts: list[int] = []

    def number(a: str) -> None:  # bash's `history N`
        if not a.isdigit():
            _no_operand(a)
        counts.append(count("N")(a))

    parsed = HISTORY.parse(args, number)
    n: int | None = counts[-1] if counts else parsed.values["n"]
    storage = kernel.storage
    lines = storage.history_list(None)
    start = max(0, len(lines) - n) if n else 0
    return "".join(f"{i + 1:5d}  {line}\n" for i, line in enumerate(lines[start:], start))


@_command("memsearch")
def memsearch(kernel: Any, args: list[str]) -> str:
    """`memsearch [-n N] [--pid PID|RUN:PID] [--run N] [--messages|--memories] WORDS...`: full-text search
    (bm25-ranked) over every stored message and memory entry, best first."""
    storage = kernel.storage
    parsed = MEMSEARCH.parse(args)
    n, run, pid_text = parsed.values["n"] or 10, parsed.values["run"], parsed.values["pid"]
    sources = parsed.values["sources"]
    query = " ".join(parsed.operands)
    if not query.strip():
        raise UsageError("nothing to search for")
    pid = None
    if pid_text is not None:
        if run is not None and ":" in pid_text:
            raise UsageError("give --run N or --pid RUN:PID, not both")
        run, pid = _target(pid_text, run, storage.run)
    hits = storage.search(query, run=run, pid=pid, sources=sources, limit=n)
    if not hits:
        return ""
    lines = []
    for h in hits:
        label = h.label if h.source == "message" else f"{h.kind or 'kv'} {h.label}"
        lines.append(f"{h.run}:{h.pid}  {h.source:<7}  {_when(h.t)}  {label}: {_one_line(h.text, 100)}")
    return "\n".join(lines) + "\n"


COMMANDS: dict[str, Callable[[Any, list[str], Pipe, Pipe], int]] = {
    "logs": logs, "last": last, "history": history, "memsearch": memsearch,
}


def register(registry: Any, kernel_getter: Callable[[], Any]) -> None:
    """Add logs/last/history/memsearch to a shell's builtin registry."""
    for name, fn in COMMANDS.items():
        def builtin(ctx: Any, fn: Callable[[Any, list[str], Pipe, Pipe], int] = fn, name: str = name) -> int:
            args = list(ctx.args)
            if name == "logs":
                try:
                    args = [_job_pid(ctx, a) if a.startswith("%") else a for a in args]
                except LookupError as exc:
                    return _fail(ctx.stderr, name, str(exc), 1)
            return fn(kernel_getter(), args, ctx.stdout, ctx.stderr)

        registry.register(name, builtin, HELP[name], USAGE[name])


def _job_pid(ctx: Any, spec: str) -> str:
    """`logs %1`: the job's agent (its first one: the group leader of a pipeline), by the shell's job table."""
    from aiosh.shell.errors import ShellError

    table = ctx.interp.jobs
    try:
        job = table.resolve(spec, "logs")
    except ShellError:
        past = table.past_agents.get(int(spec[1:])) if spec[1:].isdigit() else None
        if past:
            return str(past[0])
        raise LookupError(f"{spec}: no such job") from None
    for p in job.procs:
        if p.kind == "agent":
            return str(p.pid)
    raise LookupError(f"{spec}: the job ran no agent")
