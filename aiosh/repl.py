"""The interactive shell: a prompt-toolkit session on the main thread, over a kernel on its own threads.

Ctrl-C and Ctrl-Z reach aiosh as SIGINT/SIGTSTP while a foreground command runs (the terminal is in cooked mode
then): they are turned into signals to the foreground job, never to aiosh itself — an unhandled SIGTSTP would
suspend the kernel with every agent. At the prompt, prompt-toolkit reads them as keys.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import sys
import threading
from collections.abc import Iterable

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter
from prompt_toolkit.document import Document
from prompt_toolkit.history import History
from prompt_toolkit.patch_stdout import patch_stdout

from aiosh.kernel import signals as sig
from aiosh.kernel.argspec import RUN_OPTIONS
from aiosh.shell.prompt import HistoryError, expand_history, render_ps1
from aiosh.terminal import Pump

COMMAND_POSITION_AFTER = {"|", "||", "&&", ";", "&", "then", "do", "else", "elif", "if", "while", "!", "time", "nice"}
PID_COMMANDS = {"kill", "renice", "wait", "fg", "bg", "disown", "logs"}
RUN_VALUE_FLAGS = {o.flag for o in RUN_OPTIONS if o.takes_value}


class ShellCompleter(Completer):
    """Commands, agent names, job ids, pids, signal names and file paths, by position."""

    def __init__(self, shell, kernel) -> None:
        self.shell = shell
        self.kernel = kernel
        self._paths = PathCompleter(expanduser=True)
        self._programs: list[str] | None = None

    def _host_programs(self) -> list[str]:
        if self._programs is None:
            names: set[str] = set()
            for folder in os.environ.get("PATH", "").split(os.pathsep):
                try:
                    names.update(e.name for e in os.scandir(folder) if e.is_file() and os.access(e.path, os.X_OK))
                except OSError:
                    continue
            self._programs = sorted(names)
        return self._programs

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        text = document.text_before_cursor
        words = text.split()
        current = "" if text.endswith((" ", "\t")) or not words else words[-1]
        before = words[:-1] if current else words
        where = command_position(before)
        if where == "agent":
            yield from _matches(current, sorted(self.kernel.agent_types()))
            return
        if where == "command":
            names = set(self.shell.builtins.names()) | set(self.kernel.agent_types())
            pool = sorted(names) + [p for p in self._host_programs() if p not in names]
            yield from _matches(current, pool)
            return
        cmd = before[0] if before else ""
        if current.startswith("%"):
            yield from _matches(current, [f"%{n}" for n in self._job_numbers()])
            return
        if cmd == "kill" and current.startswith("-") and not current[1:].isdigit():
            yield from _matches(current, [f"-{n}" for n in sig.NUMBERS])
            return
        if cmd == "kill" and before and before[-1] == "-s":
            yield from _matches(current, list(sig.NUMBERS))
            return
        if cmd in PID_COMMANDS and (current == "" or current.isdigit()):
            pids = [str(p.pid) for p in self.kernel.ps()]
            yield from _matches(current, pids + [f"%{n}" for n in self._job_numbers()])
            if current.isdigit():
                return
        cwd = self.shell.cwd
        sub = Document(current, len(current))
        saved = os.getcwd()
        try:
            os.chdir(cwd)
            yield from self._paths.get_completions(sub, complete_event)
        except OSError:
            return
        finally:
            os.chdir(saved)

    def _job_numbers(self) -> list[int]:
        return sorted(self.shell.jobs.numbers())


def command_position(before: list[str]) -> str:
    """What the next word is: "agent" (after `run` and its run options), "command" (at the start, after `|`,
    `;`, `time`, `nice [-n N]` …), or "" (an argument)."""
    i = len(before)
    # skip back over the run options after `run` and the adjustment after `nice`
    j = i
    while j > 0 and (before[j - 1].startswith("--") or (j >= 2 and before[j - 2] in RUN_VALUE_FLAGS)):
        j -= 1
    if j > 0 and before[j - 1] == "run" and (j == 1 or before[j - 2] in COMMAND_POSITION_AFTER):
        return "agent"
    if i >= 3 and before[i - 3] == "nice" and before[i - 2] in ("-n", "--adjustment"):
        return "command" if i == 3 or before[i - 4] in COMMAND_POSITION_AFTER else ""
    if i >= 2 and before[i - 2] == "nice" and before[i - 1].startswith("-") and before[i - 1][1:].lstrip("-").isdigit():
        return "command"
    if not before or before[-1] in COMMAND_POSITION_AFTER:
        return "command"
    return ""


def _matches(prefix: str, pool: Iterable[str]) -> Iterable[Completion]:
    for name in pool:
        if name.startswith(prefix):
            yield Completion(name, start_position=-len(prefix))


class StoredHistory(History):
    """prompt-toolkit history read from and written to the kernel's storage (shared across runs)."""

    def __init__(self, kernel) -> None:
        super().__init__()
        self.kernel = kernel

    def load_history_strings(self) -> Iterable[str]:
        try:
            return list(reversed(self.kernel.history_list(5000)))  # newest first, as prompt-toolkit wants
        except Exception:  # noqa: BLE001 - storage off or unreadable: start with an empty history
            return []

    def store_string(self, string: str) -> None:
        try:
            self.kernel.history_add(string)
        except Exception:  # noqa: BLE001
            pass


def _is_yes(text: str) -> bool:
    return text.strip().lower() in ("y", "yes")


class Confirmations:
    """y/N questions of agents about irreversible actions.

    A background agent's question waits and is asked before the next prompt; while a foreground command runs (the
    terminal is in cooked mode and nobody else reads it), a question is asked at once by this thread.
    """

    def __init__(self, kernel) -> None:
        self.kernel = kernel
        self.prompting = threading.Event()
        self._wake = threading.Event()
        kernel.interactive_confirmations = True
        kernel.add_question_listener(lambda _q: self._wake.set())
        threading.Thread(target=self._run, name="aiosh-confirm", daemon=True).start()

    def _pending(self):
        return [q for q in self.kernel.questions()]

    def _run(self) -> None:
        while True:
            self._wake.wait(0.5)
            self._wake.clear()
            if self.prompting.is_set():
                continue
            for q in self._pending():
                if self.prompting.is_set():
                    break
                self._ask_on_terminal(q)

    def _ask_on_terminal(self, q) -> None:
        sys.stderr.write(f"aiosh: {q.agent}[{q.pid}]: {q.text} [y/N] ")
        sys.stderr.flush()
        line = ""
        while "\n" not in line and not self.prompting.is_set():
            if q.id not in {x.id for x in self.kernel.questions()}:
                sys.stderr.write("(no longer asked)\n")
                return
            ready, _, _ = select.select([0], [], [], 0.2)
            if ready:
                data = os.read(0, 1024)
                if not data:
                    break
                line += data.decode("utf-8", "replace")
        if "\n" in line or not line:
            self.kernel.answer(q.id, _is_yes(line))

    def ask_at_prompt(self, session: PromptSession) -> None:
        """Before a prompt: every waiting question, one by one."""
        for q in self._pending():
            try:
                with patch_stdout(raw=True):
                    reply = session.prompt(f"aiosh: {q.agent}[{q.pid}]: {q.text} [y/N] ")
            except (KeyboardInterrupt, EOFError):
                reply = "n"
            self.kernel.answer(q.id, _is_yes(reply))


class Repl:
    """Reads lines, runs them in the shell, prints job notices before each prompt."""

    def __init__(self, shell, kernel, pumps: list[Pump]) -> None:
        self.shell = shell
        self.kernel = kernel
        self.pumps = pumps
        self.session: PromptSession = PromptSession(
            history=StoredHistory(kernel), completer=ShellCompleter(shell, kernel), complete_while_typing=False,
        )
        self.confirm = Confirmations(kernel) if hasattr(kernel, "questions") else None
        self._signalled = False  # Ctrl-C or Ctrl-Z reached a foreground job during the last command
        self.last_line: str | None = None  # for `!!` and `!$`

    def prompt_text(self) -> str:
        ps1 = self.shell.vars.get("PS1")
        if ps1 is not None:
            return render_ps1(ps1, self.shell)
        running = len(self.shell.jobs.running())
        return f"aiosh[{running}]$ " if running else "aiosh$ "

    def _forward(self, signum: int, _frame: object) -> None:
        if self.shell.foreground_signal(signum):
            self._signalled = True

    def run(self) -> int:
        old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTSTP, signal.SIGQUIT)}
        signal.signal(signal.SIGINT, self._forward)
        signal.signal(signal.SIGTSTP, self._forward)
        signal.signal(signal.SIGQUIT, signal.SIG_IGN)
        status = 0
        try:
            while True:
                for p in self.pumps:
                    p.drain(0.05)
                    p.set_line_mode(True)  # background lines held back during the command come out first
                self._flush_notices()
                if self.confirm is not None:
                    self.confirm.prompting.set()
                try:
                    if self.confirm is not None:
                        self.confirm.ask_at_prompt(self.session)
                    line = self._read_command()
                except KeyboardInterrupt:
                    continue
                except EOFError:
                    line = "exit"
                    print("exit")
                finally:
                    for p in self.pumps:
                        p.set_line_mode(False)
                    if self.confirm is not None:
                        self.confirm.prompting.clear()
                self._signalled = False
                try:
                    line, changed = expand_history(line, self.last_line)
                except HistoryError as exc:
                    print(f"aiosh: {exc}", file=sys.stderr)
                    continue
                if changed:
                    print(line, flush=True)  # bash shows the command it is about to run
                if line.strip():
                    self.last_line = line
                try:
                    status = self.shell.run_line(line)
                except Exception as exc:  # noqa: BLE001 - nothing typed may crash the shell or its agents
                    print(f"aiosh: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
                    status = 1
                for p in self.pumps:
                    p.drain(0.2)
                if self._signalled:  # the terminal echoed ^C or ^Z after the output: bash ends that line
                    self._newline()
                if self.shell.exited is not None:
                    return self.shell.exited
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        return status

    def _newline(self) -> None:
        sys.stdout.write("\n")
        sys.stdout.flush()
        for p in self.pumps:
            p.note_written("\n")

    def _read_command(self) -> str:
        """One command, over several lines while it is incomplete (an open quote, `if` without `fi` …)."""
        with patch_stdout(raw=True):
            text = self.session.prompt(self.prompt_text)
            while not self.shell.is_complete(text):
                text += "\n" + self.session.prompt("> ")
        return text

    def _flush_notices(self) -> None:
        for line in self.shell.jobs.take_notices():
            print(line, flush=True)
            for p in self.pumps:
                p.note_written("\n")


def terminal_width() -> int:
    return shutil.get_terminal_size((100, 24)).columns
