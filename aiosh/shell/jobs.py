"""The job table: numbering, current (+) and previous (-) jobs, bash's `jobs` lines, and state-change notices.

A job is one pipeline (or one backgrounded list). Its processes report changes from their own threads; the table
turns them into notices (`[1]+  Done                    sleep 1`) that the REPL collects with
`take_notices()` before each prompt, as bash prints them before its next prompt.
"""

from __future__ import annotations

import os
import signal as _signal
import threading
import time
from collections.abc import Callable

from .errors import ShellError
from .lexer import is_digits
from .procs import AgentProc, Proc, ThreadProc, signal_group

STATUS_WIDTH = 24  # bash's LONGEST_SIGNAL_DESC


def describe_status(status: int) -> str:
    """bash's words for how a job ended: Done, Exit 3, Terminated, Killed …"""
    if status == 0:
        return "Done"
    if status > 128:
        sig = status - 128
        try:
            return _signal.strsignal(sig) or f"Signal {sig}"
        except ValueError:
            return f"Exit {status}"
    return f"Exit {status}"


class Job:
    def __init__(self, text: str, cwd: str, *, pipefail: bool = False) -> None:
        self.id = 0
        self.procs: list[Proc] = []
        self.text = text
        self.cwd = cwd
        self.pipefail = pipefail
        self.agent_pgid: int | None = None
        self.reported = "running"  # the state last shown to the user
        self.foreground = False
        self.background = False  # started with `&`: its agents' output goes to the terminal line by line
        self.nohup = False  # `disown -h`: not sent SIGHUP when the shell exits

    @property
    def state(self) -> str:
        if all(p.finished for p in self.procs):
            return "done"
        if any(p.stopped for p in self.procs if not p.finished):
            return "stopped"
        return "running"

    @property
    def status(self) -> int:
        """The last stage's status, or with pipefail the last non-zero one."""
        if not self.procs:
            return 0
        if self.pipefail:
            for p in reversed(self.procs):
                if p.status:
                    return p.status
            return 0
        return self.procs[-1].status or 0

    @property
    def stop_signal(self) -> int:
        for p in self.procs:
            if p.stopped:
                return p.stop_signal
        return _signal.SIGTSTP

    @property
    def pgid(self) -> int:
        """What `jobs -p` prints: the first process's pid (the group leader for agent pipelines)."""
        return self.agent_pgid or (self.procs[0].pid if self.procs else 0)

    @property
    def last_pid(self) -> int:
        return self.procs[-1].pid if self.procs else 0

    def signal(self, sig: int, agents: object | None = None) -> None:
        """Deliver to every live process: agents by group, host programs by their groups, threads directly."""
        delivered = False
        agent_group_done = False
        groups_done: set[int] = set()
        for p in self.procs:
            if isinstance(p, ThreadProc) and p.pgid == self.procs[0].pid and p.pgid not in groups_done:
                # a job that leads its group: its shell threads' children (background code in a subshell) too
                groups_done.add(p.pgid)
                if signal_group(p.pgid, sig):
                    delivered = True
                continue
            if p.finished:
                continue
            try:
                if isinstance(p, AgentProc) and self.agent_pgid is not None:
                    if not agent_group_done:
                        p.host.signal(-self.agent_pgid, sig)
                        agent_group_done = True
                else:
                    p.signal(sig)
                delivered = True
            except LookupError:
                continue
        if agent_group_done:
            delivered = True
        if not delivered:
            raise LookupError("no such process")
        if sig == _signal.SIGCONT:
            for p in self.procs:
                if isinstance(p, AgentProc):
                    p.set_continued()  # in case the host sends no 'continued' event


class JobTable:
    def __init__(self, *, interactive: bool = False) -> None:
        self.interactive = interactive
        self.jobs: dict[int, Job] = {}
        self._mru: list[int] = []
        self._notices: list[str] = []
        self.remembered: dict[int, int] = {}  # pid → status of finished jobs, for `wait PID`
        self.past_agents: dict[int, list[int]] = {}  # job number → agent pids of the last finished job so numbered
        self.cond = threading.Condition()

    # -- membership --------------------------------------------------------------------------------------------
    def watch(self, job: Job, proc: Proc) -> None:
        """Add a started process to a job and follow its state changes."""
        job.procs.append(proc)
        proc.add_watcher(self._changed)

    def add(self, job: Job) -> int:
        """Give a job a number (the next after the highest in use) and make it current."""
        with self.cond:
            if job.id and self.jobs.get(job.id) is job:
                self._touch(job.id)
                return job.id
            job.id = max(self.jobs, default=0) + 1
            self.jobs[job.id] = job
            self._touch(job.id)
            return job.id

    def remove(self, job: Job) -> None:
        with self.cond:
            if self.jobs.get(job.id) is job:
                del self.jobs[job.id]
                self._mru = [i for i in self._mru if i != job.id]
            if job.state == "done":
                for p in job.procs:
                    if p.status is not None:
                        self.remembered[p.pid] = p.status
                agents = [p.pid for p in job.procs if p.kind == "agent"]
                if agents:
                    self.past_agents[job.id] = agents  # `logs %1` after the job has gone

    def _touch(self, job_id: int) -> None:
        self._mru = [job_id] + [i for i in self._mru if i != job_id]

    def touch(self, job: Job) -> None:
        with self.cond:
            if job.id in self.jobs:
                self._touch(job.id)

    def _changed(self, proc: Proc) -> None:
        with self.cond:
            self.cond.notify_all()

    # -- current / previous --------------------------------------------------------------------------------------
    def _ordered(self) -> list[int]:
        """Job ids by preference: stopped jobs first (most recent first), then the rest (most recent first)."""
        ids = [i for i in self._mru if i in self.jobs]
        stopped = [i for i in ids if self.jobs[i].state == "stopped"]
        return stopped + [i for i in ids if i not in stopped]

    def current(self) -> Job | None:
        with self.cond:
            order = self._ordered()
            return self.jobs[order[0]] if order else None

    def previous(self) -> Job | None:
        with self.cond:
            order = self._ordered()
            return self.jobs[order[1]] if len(order) > 1 else None

    def mark(self, job: Job) -> str:
        with self.cond:
            order = self._ordered()
        if order and order[0] == job.id:
            return "+"
        if len(order) > 1 and order[1] == job.id:
            return "-"
        return " "

    # -- lookup ------------------------------------------------------------------------------------------------
    def resolve(self, spec: str, builtin: str) -> Job:
        """`%n`, `%%`, `%+`, `%-`, `%name`, `%?text`, or a pid of one of the jobs' processes."""
        with self.cond:
            job: Job | None = None
            if spec in ("%", "%%", "%+", "current"):
                job = self.current()
                spec = "current" if spec == "current" else spec
            elif spec == "%-":
                job = self.previous()
            elif spec.startswith("%") and is_digits(spec[1:]):
                job = self.jobs.get(int(spec[1:]))
            elif spec.startswith("%?"):
                hits = [j for j in self.jobs.values() if spec[2:] in j.text]
                if len(hits) > 1:
                    raise ShellError(f"{builtin}: {spec}: ambiguous job spec")
                job = hits[0] if hits else None
            elif spec.startswith("%"):
                hits = [j for j in self.jobs.values() if j.text.startswith(spec[1:])]
                if len(hits) > 1:
                    raise ShellError(f"{builtin}: {spec}: ambiguous job spec")
                job = hits[0] if hits else None
            elif is_digits(spec):
                job = self.find_pid(int(spec))
            if job is None:
                raise ShellError(f"{builtin}: {spec}: no such job")
            return job

    def find_pid(self, pid: int) -> Job | None:
        with self.cond:
            for job in self.jobs.values():
                if any(p.pid == pid for p in job.procs):
                    return job
        return None

    # -- display -----------------------------------------------------------------------------------------------
    def format(self, job: Job, *, long: bool = False, cwd: str | None = None, state: str | None = None) -> str:
        """bash's `jobs` line(s) for a job: `[1]+  Running                 sleep 10 &`."""
        state = state or job.state
        if state == "done":
            word = describe_status(job.status)
        elif state == "stopped":
            word = "Stopped"
        else:
            word = "Running"
        head = f"[{job.id}]{self.mark(job)} "
        suffix = " &" if state == "running" else ""
        wd = ""
        if cwd is not None and os.path.normpath(cwd) != os.path.normpath(job.cwd):
            wd = f"  (wd: {_polite(job.cwd)})"
        if not long:
            return f"{head} {word:<{STATUS_WIDTH}}{job.text}{suffix}{wd}"
        lines = []
        first_word = _proc_word(job.procs[0]) if job.procs else word
        for i, p in enumerate(job.procs):
            end = (suffix + wd) if i == len(job.procs) - 1 else ""
            if i == 0:
                lines.append(f"{head}{p.pid:5d} {first_word:<{STATUS_WIDTH}}{p.text}{end}")
            else:
                own = _proc_word(p)
                shown = "" if own == first_word else own
                pad = STATUS_WIDTH - (len(shown) or 2)
                lines.append(f"     {p.pid:5d} {shown}{'':<{pad}}| {p.text}{end}")
        return "\n".join(lines)

    def take_notices(self) -> list[str]:
        """Notices of jobs that finished or stopped since last asked; finished jobs leave the table.

        A non-interactive table gives none (bash prints no notices in scripts) and just forgets finished jobs.
        """
        if not self.interactive:
            self.cleanup_done()
            return []
        out: list[str] = []
        with self.cond:
            for job in sorted(self.jobs.values(), key=lambda j: j.id):
                st = job.state
                if st != job.reported and st in ("done", "stopped"):
                    out.append(self.format(job, state=st))
                    job.reported = st
                elif st == "running" and job.reported == "stopped":
                    job.reported = "running"
            for job in [j for j in self.jobs.values() if j.state == "done" and j.reported == "done"]:
                self.remove(job)
            out = self._notices + out
            self._notices = []
        return out

    def add_notice(self, text: str) -> None:
        with self.cond:
            self._notices.append(text)

    def cleanup_done(self) -> None:
        """Non-interactive shells drop finished jobs silently (bash prints no notices there)."""
        with self.cond:
            for job in [j for j in self.jobs.values() if j.state == "done"]:
                job.reported = "done"
                self.remove(job)

    def numbers(self) -> list[int]:
        """The job numbers in use (for `%N` completion)."""
        with self.cond:
            return sorted(self.jobs)

    def running(self) -> list[Job]:
        with self.cond:
            return [j for j in self.jobs.values() if j.state == "running"]

    def stopped(self) -> list[Job]:
        with self.cond:
            return [j for j in self.jobs.values() if j.state == "stopped"]

    # -- waiting -----------------------------------------------------------------------------------------------
    def wait_job(
        self, job: Job, *, return_on_stop: bool, interrupted: Callable[[], bool] | None = None
    ) -> int | None:
        """Block until the job is done (its status) or, if asked, stopped (128+signal); None if interrupted."""
        last_poll = 0.0
        while True:
            with self.cond:
                st = job.state
                if st == "done":
                    return job.status
                if st == "stopped" and return_on_stop:
                    return 128 + job.stop_signal
                if interrupted is not None and interrupted():
                    return None
                self.cond.wait(0.05)
            now = time.monotonic()
            if return_on_stop and now - last_poll > 0.2:
                last_poll = now
                for p in list(job.procs):
                    p.poll_state()

    def wait_any(self, jobs: list[Job], interrupted: Callable[[], bool] | None = None) -> Job | None:
        """`wait -n`: block until one of the jobs is done; the one that finished first wins."""
        while True:
            with self.cond:
                done = [j for j in jobs if j.state == "done"]
                if done:
                    return min(done, key=lambda j: max(p.finished_at for p in j.procs))
                if not jobs or (interrupted is not None and interrupted()):
                    return None
                self.cond.wait(0.05)


def _polite(path: str) -> str:
    home = os.environ.get("HOME")
    if home and (path == home or path.startswith(home.rstrip("/") + "/")):
        return "~" + path[len(home.rstrip("/")) :]
    return path


def _proc_word(p: Proc) -> str:
    """One process's state as `jobs -l` shows it."""
    if p.finished:
        return describe_status(p.status or 0)
    return "Stopped" if p.stopped else "Running"
