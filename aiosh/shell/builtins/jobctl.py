"""jobs, fg, bg, wait, kill, disown, nice, renice, ulimit, run: job control over agent processes, bash's way."""

from __future__ import annotations

import os
import signal as _signal

from .. import procs as _procs
from ..agents import LIMIT_KEYS
from ..errors import Cancelled, ShellError
from ..jobs import STATUS_WIDTH, Job, describe_status
from ..lexer import is_digits
from ..procs import signal_group
from . import BuiltinContext, BuiltinRegistry
from .getopt import Flag, OptionError, Options

# -- signals -----------------------------------------------------------------------------------------------------


def signal_names() -> dict[int, str]:
    """Signal number → name without SIG, for the signals this platform has (1…64, as `kill -l` lists)."""
    names: dict[int, str] = {}
    for s in _signal.Signals:
        if s.name.startswith("SIG") and not s.name.startswith("SIG_") and s.value not in names:
            names[int(s.value)] = s.name[3:]
    if hasattr(_signal, "SIGRTMIN"):
        lo, hi = int(_signal.SIGRTMIN), int(_signal.SIGRTMAX)
        mid = (lo + hi) // 2
        for n in range(lo, hi + 1):
            names[n] = f"RTMIN+{n - lo}" if n <= mid else f"RTMAX-{hi - n}"
        names[lo], names[hi] = "RTMIN", "RTMAX"
    names.pop(0, None)
    return dict(sorted(names.items()))


def parse_signal(spec: str) -> int | None:
    """`TERM`, `SIGTERM`, `term`, `15` → 15 (the kernel's parser, over this host's signals); None when unknown.
    Imported on first use: the shell library loads no kernel module but streams."""
    from aiosh.kernel import signals

    try:
        return signals.parse_signal(spec, signal_names())
    except ValueError:
        return None


def _signal_word(word: str, seen: list[Flag]) -> Flag | None:
    """kill's words that are not `-l`, `-L`, `-s SIG` or `-n NUM`, read as bash's kill.def reads them: `-sTERM` and
    `-n9` (a value attached only so), `-?` (the usage), and the first signal given as `-9`, `-TERM` or `-` (an empty
    name); after a signal, a word like `-15` is a process group, so the options end there."""
    if len(word) > 2 and word[1] == "s" and word[2].isascii() and word[2].isalpha():
        return Flag("s", word[2:])
    if len(word) > 2 and word[1] == "n" and word[2].isascii() and word[2].isdigit():
        return Flag("n", word[2:])
    if word == "-?":
        raise OptionError()
    if any(f.letter in "sn" for f in seen):
        return None
    return Flag("s", word[1:])


KILL = Options("lLs:n:", clusters=False, other=_signal_word, needarg_usage=False)


def kill(ctx: BuiltinContext) -> int:
    if not ctx.args:
        return ctx.usage_error()
    scan = KILL.scan(ctx.args)
    listing = False
    spec: str | None = None  # the last signal given counts, as in bash
    for flag in scan:
        if flag.letter in "lL":
            listing = True
        else:
            spec = flag.value
    args = scan.rest
    if listing:
        return list_signals(ctx, args)
    sig = int(_signal.SIGTERM)
    if spec is not None:
        got = 0 if spec == "0" else parse_signal(spec)
        if got is None:
            return ctx.error(f"{spec}: invalid signal specification")
        sig = got
    if not args:
        return ctx.usage_error()
    status = 0
    for target in args:
        try:
            _kill_one(ctx, target, sig)
        except ShellError as exc:
            ctx.interp.diag(ctx.io, exc.message)
            status = 1
    return status


def _kill_one(ctx: BuiltinContext, target: str, sig: int) -> None:
    shell = ctx.session
    table = ctx.interp.jobs
    if target.startswith("%"):
        job = table.resolve(target, "kill")
        try:
            job.signal(sig)
        except LookupError:
            raise ShellError(f"kill: {target}: no such job") from None
        if job.state == "stopped" and sig in (_signal.SIGTERM, _signal.SIGHUP, _signal.SIGINT):
            try:
                job.signal(_signal.SIGCONT)
            except LookupError:
                pass
        return
    try:
        num = int(target)
    except ValueError:
        raise ShellError(f"kill: {target}: arguments must be process or job IDs") from None
    owner = table.find_pid(abs(num)) if num > 0 else None
    if owner is not None:
        for p in owner.procs:
            if p.pid == num:
                try:
                    p.signal(sig)
                    return
                except LookupError:
                    break
    if num < 0:
        for j in list(table.jobs.values()):
            if j.agent_pgid == -num or (j.procs and j.procs[0].pid == -num and j.agent_pgid is None):
                try:
                    j.signal(sig)
                    return
                except LookupError:
                    break
        if signal_group(-num, sig):  # shell threads whose job has ended (a fork bomb's descendants)
            return
    if num == shell.pid:  # the shell itself (`kill -USR1 $$`): a trap runs after this command, as in bash
        try:
            os.kill(num, sig)
        except OSError as exc:
            raise ShellError(f"kill: ({num}) - {exc.strerror}") from None
        return
    if shell.agents is None:
        raise ShellError(f"kill: ({num}) - No such process")
    try:
        shell.agents.signal(num, sig)
    except LookupError:
        raise ShellError(f"kill: ({num}) - No such process") from None
    except ValueError as exc:
        raise ShellError(f"kill: {exc}") from None


def list_signals(ctx: BuiltinContext, args: list[str]) -> int:
    """`kill -l [SIG…]` and `trap -l`: the table of signals, or each one's name or number."""
    names = signal_names()
    if not args:
        cells = [f"{n:2d}) SIG{name}" for n, name in names.items()]
        for i in range(0, len(cells), 5):
            row = cells[i : i + 5]
            ctx.write("\t".join(row) + ("\t" if len(row) < 5 else "") + "\n")  # bash: a short last row keeps its tab
        return 0
    status = 0
    for a in args:
        if is_digits(a):
            n = int(a)
            if n > 128:
                n -= 128
            if n == 0:
                ctx.write("EXIT\n")
            elif n in names:
                ctx.write(names[n] + "\n")
            else:
                status = ctx.error(f"{a}: invalid signal specification")
        else:
            num = parse_signal(a)
            if num is None:
                status = ctx.error(f"{a}: invalid signal specification")
            else:
                ctx.write(f"{num}\n")
    return status


# -- jobs, fg, bg, disown ----------------------------------------------------------------------------------------


JOBS = Options("lnprs")
DISOWN = Options("ahr")
WAIT = Options("fn")


def jobs(ctx: BuiltinContext) -> int:
    opts, args = JOBS.switches(ctx.args)
    table = ctx.interp.jobs
    if not table.interactive:
        table.cleanup_done()
    try:
        chosen = [table.resolve(a, "jobs") for a in args] if args else sorted(table.jobs.values(), key=lambda j: j.id)
    except ShellError as exc:
        ctx.interp.diag(ctx.io, exc.message)
        return 1
    if not args and not chosen and table.inherited:  # a subshell: the parent's jobs, left as they are
        for job in table.inherited:
            if job.state != "done":
                ctx.write((f"{job.pgid}" if "p" in opts else table.format(job, long="l" in opts, cwd=ctx.state.cwd)) + "\n")
        return 0
    for job in chosen:
        st = job.state
        if "r" in opts and st != "running" or "s" in opts and st != "stopped":
            continue
        if "p" in opts:
            ctx.write(f"{job.pgid}\n")
            continue
        if "n" in opts and st == job.reported:
            continue
        ctx.write(table.format(job, long="l" in opts, cwd=ctx.state.cwd) + "\n")
        if st in ("done", "stopped"):
            job.reported = st
    for job in [j for j in chosen if j.state == "done"]:
        table.remove(job)
    return 0


def _job_arg(ctx: BuiltinContext, args: list[str]) -> Job:
    table = ctx.interp.jobs
    spec = args[0] if args else "current"
    return table.resolve(spec, ctx.name)


def fg(ctx: BuiltinContext) -> int:
    if not ctx.session.interactive:
        return ctx.error("no job control")
    try:
        job = _job_arg(ctx, ctx.args)
    except ShellError as exc:
        ctx.interp.diag(ctx.io, exc.message)
        return 1
    ctx.write(job.text + "\n")
    table = ctx.interp.jobs
    table.touch(job)
    if job.state == "stopped":
        try:
            job.signal(_signal.SIGCONT)
        except LookupError:
            pass
    job.reported = "running"
    status = ctx.interp.wait_foreground(job)
    if job.state == "done":
        job.reported = "done"
        table.remove(job)
    return status


def bg(ctx: BuiltinContext) -> int:
    if not ctx.session.interactive:
        return ctx.error("no job control")
    table = ctx.interp.jobs
    specs = ctx.args or ["current"]
    status = 0
    for spec in specs:
        try:
            job = table.resolve(spec, "bg")
        except ShellError as exc:
            ctx.interp.diag(ctx.io, exc.message)
            status = 1
            continue
        if job.state != "stopped":
            ctx.error(f"job {job.id} already in background")
            continue
        try:
            job.signal(_signal.SIGCONT)
        except LookupError:
            pass
        job.reported = "running"
        ctx.write(f"[{job.id}]{table.mark(job)} {job.text} &\n")
    return status


def disown(ctx: BuiltinContext) -> int:
    opts, args = DISOWN.switches(ctx.args)
    table = ctx.interp.jobs
    if "a" in opts:
        chosen = list(table.jobs.values())
    elif "r" in opts and not args:
        chosen = table.running()
    else:
        try:
            chosen = [table.resolve(a, "disown") for a in (args or ["current"])]
        except ShellError as exc:
            ctx.interp.diag(ctx.io, exc.message)
            return 1
    for job in chosen:
        if "h" in opts:
            job.nohup = True
        else:
            job.reported = "done"
            table.remove(job)
    return 0


# -- wait --------------------------------------------------------------------------------------------------------

_REPORTED_SIGNALS = frozenset(int(s) for s in _signal.Signals) - {_signal.SIGINT, _signal.SIGTERM, _signal.SIGPIPE}


def wait(ctx: BuiltinContext) -> int:
    opts, args = WAIT.switches(ctx.args)
    interp = ctx.interp
    table = interp.jobs

    caught = [int(_signal.SIGINT)]

    def interrupted() -> bool:
        """A trapped signal ends the wait (128+n, then the trap runs), and so does Ctrl-C."""
        if ctx.session.signals.pending and interp.main and interp.proc is None:
            caught[0] = ctx.session.signals.pending[0]
            return True
        try:
            interp.checkpoint()
        except Cancelled:
            return True
        return False

    if "n" in opts:
        pool = []
        for a in args:
            try:
                pool.append(table.resolve(a, "wait"))
            except ShellError as exc:
                ctx.interp.diag(ctx.io, exc.message)
        if not args:
            pool = list(table.jobs.values())
        pool = [j for j in pool if j.state != "done" or j.reported != "done"]
        if not pool:
            return 127
        job = table.wait_any(pool, interrupted)
        if job is None:
            return 128 + caught[0]
        job.reported = "done"
        table.remove(job)
        return job.status
    if not args:
        for job in sorted(table.jobs.values(), key=lambda j: j.id):
            if job.state == "stopped":
                continue
            if table.wait_job(job, return_on_stop=False, interrupted=interrupted) is None:
                return 128 + caught[0]
            job.reported = "done"
            table.remove(job)
        return 0
    status = 0
    for spec in args:
        if spec.startswith("%"):
            try:
                job = table.resolve(spec, "wait")
            except ShellError as exc:
                ctx.interp.diag(ctx.io, exc.message)
                status = 127
                continue
            got = table.wait_job(job, return_on_stop=False, interrupted=interrupted)
            if got is None:
                return 128 + caught[0]
            status = got
            job.reported = "done"
            table.remove(job)
            continue
        if not is_digits(spec):
            ctx.error(f"`{spec}': not a pid or valid job spec")
            status = 1
            continue
        pid = int(spec)
        found = table.find_pid(pid)
        if found is None:
            if pid in table.remembered:
                status = table.remembered.pop(pid)
                continue
            ctx.error(f"pid {pid} is not a child of this shell")
            status = 127
            continue
        proc = next(p for p in found.procs if p.pid == pid)
        while not proc.finished:
            if interrupted():
                return 128 + caught[0]
            proc.wait(0.05)
        if interrupted():  # a trapped signal that came while we waited (its handler may run only now)
            return 128 + caught[0]
        status = proc.status or 0
        if status - 128 in _REPORTED_SIGNALS and not table.interactive and found.background:
            # bash reports a waited-for process that a signal ended (not INT, TERM or PIPE)
            ctx.write_err(f"{ctx.session.argv0}: {pid} {describe_status(status):<{STATUS_WIDTH}}{found.text}\n")
        if found.state == "done":
            found.reported = "done"
            table.remove(found)
    return status


# -- nice, renice, ulimit, run -------------------------------------------------------------------------------------


def nice(ctx: BuiltinContext) -> int:
    """Only reached without a command (the interpreter runs `nice [-n N] COMMAND…` itself)."""
    if not ctx.args:
        ctx.write("0\n")
        return 0
    return ctx.error("a command must be given with an adjustment", 125)


def renice(ctx: BuiltinContext) -> int:
    args = list(ctx.args)
    if args and args[0] in ("-n", "--priority"):
        args.pop(0)
    if not args:
        return ctx.usage_error()
    try:
        value = int(args.pop(0))
    except ValueError:
        return ctx.error(f"invalid priority '{ctx.args[0]}'", 1)
    value = max(-20, min(19, value))
    status = 0
    for target in args:
        if target in ("-p", "--pid"):
            continue
        if target in ("-g", "-u", "--pgrp", "--user"):
            return ctx.error(f"{target}: only process IDs and job specs are supported", 2)
        try:
            _renice_one(ctx, target, value)
        except ShellError as exc:
            ctx.interp.diag(ctx.io, f"renice: {exc.message}")
            status = 1
    return status


def _renice_one(ctx: BuiltinContext, target: str, value: int) -> None:
    table = ctx.interp.jobs
    host = ctx.session.agents
    if target.startswith("%"):
        try:
            job = table.resolve(target, "renice")
        except ShellError:
            raise ShellError(f"{target}: no such job") from None
        pids = [(p.kind, p.pid) for p in job.procs if not p.finished]
    else:
        try:
            pid = int(target)
        except ValueError:
            raise ShellError(f"failed to parse pid: '{target}'") from None
        owner = table.find_pid(pid)
        kind = next((p.kind for p in owner.procs if p.pid == pid), "agent") if owner else "agent"
        pids = [(kind, pid)]
    for kind, pid in pids:
        if kind == "host":
            try:
                os.setpriority(os.PRIO_PROCESS, pid, value)
            except OSError as exc:
                raise ShellError(f"failed to set priority for {pid} (process ID): {exc.strerror}") from None
        elif kind == "agent":
            fn = getattr(host, "renice", None)
            if fn is None:
                raise ShellError("the agent host cannot change priorities")
            try:
                fn(pid, value)
            except LookupError:
                raise ShellError(f"failed to set priority for {pid} (process ID): No such process") from None


LIMITS = {
    "--max-tokens": ("max_tokens", "max tokens", int),
    "--max-time": ("max_time", "max time (seconds)", float),
    "--max-kv": ("max_kv", "max kv cells", int),
}
# Like bash's `ulimit -u`: the shell processes (subshells, pipeline stages, background shell code) alive at once.
# A soft limit, for this shell and what it starts; procs.MAX_THREAD_PROCS is the hard one. Agents have the kernel's
# own limit (`limits.max_procs` in aiosh.toml).
PROCS_FLAG = "-u"


ULIMIT = Options("aHS" + PROCS_FLAG[1] + ";", long=[flag[2:] + ";" for flag in LIMITS])  # `;`: an optional value


def ulimit(ctx: BuiltinContext) -> int:
    """bash's ulimit.def over aiosh's limits: each option shows its limit or, with a value (attached, `=V`, or the
    next word unless that looks like an option), sets it; a bare operand is the value of a last option without one;
    -a shows them all; -H shows the hard limit of -u (the others have none); several shown get their descriptions."""
    limits = ctx.state.limits
    scan = ULIMIT.scan(ctx.args)
    hard = False
    show_all = False
    commands: list[list] = []  # [option, value]
    for flag in scan:
        if flag.letter in "HS":
            hard = flag.letter == "H"
        elif flag.letter == "a":
            show_all = True
        else:
            commands.append(["-" + flag.letter if len(flag.letter) == 1 else flag.letter, flag.value])
    args = scan.rest
    if show_all or (not commands and not args):
        for name, (key, desc, _t) in LIMITS.items():
            ctx.write(f"{desc:<24}({name}) {_show_limit(limits.get(key))}\n")
        ctx.write(f"{'max shell processes':<24}({PROCS_FLAG}) {_procs_limit(limits, hard)}\n")
        return 0
    if args:
        if not commands:
            return ctx.usage_error(f"{args[0]}: invalid option")  # bash's file-size limit (-f): none here
        if commands[-1][1] is None:
            commands[-1][1] = args[0]
    status = 0
    for flag, value in commands:
        if flag == PROCS_FLAG:
            if value is None:
                shown = str(_procs_limit(limits, hard))
            else:
                status = _set_procs_limit(ctx, limits, value) or status
                continue
        else:
            key, _desc, typ = LIMITS[flag]
            if value is None:
                shown = _show_limit(limits.get(key))
            elif value == "unlimited":
                limits.pop(key, None)
                continue
            else:
                try:
                    number = typ(value)
                    if number < 0:
                        raise ValueError(value)
                except ValueError:
                    status = ctx.error(f"{value}: invalid number")
                    continue
                limits[key] = number
                continue
        desc = "max shell processes" if flag == PROCS_FLAG else LIMITS[flag][1]
        ctx.write(f"{desc:<24}({flag}) {shown}\n" if len(commands) > 1 else f"{shown}\n")
    return status


def _procs_limit(limits: dict, hard: bool = False) -> int:
    value = None if hard else limits.get("max_procs")
    return min(value, _procs.MAX_THREAD_PROCS) if isinstance(value, int) else _procs.MAX_THREAD_PROCS


def _set_procs_limit(ctx: BuiltinContext, limits: dict, value: str | None) -> int:
    """`ulimit -u [N|unlimited|hard]`: show or set the soft limit; above the hard limit is an error, as in bash."""
    if value is None:
        ctx.write(f"{_procs_limit(limits)}\n")
        return 0
    if value in ("unlimited", "hard"):
        limits.pop("max_procs", None)
        return 0
    if not value.isdigit():
        return ctx.error(f"{value}: invalid number")
    number = int(value)
    if number > _procs.MAX_THREAD_PROCS:
        return ctx.error(f"max user processes: cannot modify limit: Operation not permitted (hard limit "
                         f"{_procs.MAX_THREAD_PROCS})")
    limits["max_procs"] = number
    return 0


def _show_limit(value: object) -> str:
    if value is None:
        return "unlimited"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def run(ctx: BuiltinContext) -> int:
    """Only reached without an agent (the interpreter starts `run AGENT …` itself)."""
    return ctx.usage_error("an agent name is required")


def register(reg: BuiltinRegistry) -> None:
    assert set(LIMIT_KEYS) == {k for k, _d, _t in LIMITS.values()}
    reg.register("jobs", jobs, "list jobs (+ current, - previous)", "jobs [-lnprs] [jobspec ...]")
    reg.register("fg", fg, "bring a job to the foreground (continuing it if stopped)", "fg [job_spec]")
    reg.register("bg", bg, "continue a stopped job in the background", "bg [job_spec ...]")
    reg.register("wait", wait, "wait for jobs or processes and return the status of the last one",
                 "wait [-fn] [id ...]")  # fmt: skip
    reg.register("kill", kill, "send a signal to agents, jobs or process groups",
                 "kill [-s sigspec | -n signum | -sigspec] pid | jobspec ... or kill -l [sigspec]")  # fmt: skip
    reg.register("disown", disown, "remove jobs from the job table", "disown [-h] [-ar] [jobspec ... | pid ...]")
    reg.register("nice", nice, "run a command with a changed nice value (default +10)",
                 "nice [-n N] command [args ...]")  # fmt: skip
    reg.register("renice", renice, "change the nice value of running agents", "renice [-n] N [-p] pid|%job ...")
    reg.register("ulimit", ulimit, "show or set the default limits for agent runs",
                 "ulimit [-SHa] [-u N] [--max-tokens N] [--max-time S] [--max-kv N]")  # fmt: skip
    reg.register("run", run, "start an agent (also: just type its name)",
                 "run [--max-tokens N] [--seed N] [--temperature T] [--nice N] [--class C] [--max-time S] "
                 "[--max-kv N] agent [args ...]")  # fmt: skip
