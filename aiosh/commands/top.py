"""`top`: the monitor full screen over the running kernel; what agents printed meanwhile is shown afterwards."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from .argv import Syntax, UsageError, opt

if TYPE_CHECKING:
    from aiosh.kernel import Kernel
    from aiosh.shell import Shell
    from aiosh.shell.builtins import BuiltinContext
    from aiosh.terminal import Pump

USAGE = "top [-d SECONDS]"


def _interval(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise UsageError(f"-d: invalid interval '{value}'")
    return seconds


# (`top -d` without a value was always "-d: unknown option": kept so)
TOP = Syntax((opt("-d", metavar="SECONDS", type=_interval, default=0.5, missing="unknown option",
                  help="refresh every SECONDS"),), end_of_options=False)


def register_top(shell: Shell, kernel: Kernel, pumps: list[Pump]) -> None:
    """Add `top` to this shell (it needs the terminal the shell owns, and the pumps to hold while it draws)."""

    def top(ctx: BuiltinContext) -> int:
        try:
            parsed = TOP.parse(ctx.args)
            if parsed.operands:
                raise UsageError(f"{parsed.operands[0]}: unknown option")
        except UsageError as exc:
            return ctx.usage_error(str(exc))
        if not shell.interactive or threading.current_thread() is not threading.main_thread():
            return ctx.error("needs the interactive terminal (use aiosh --monitor for scripts)")
        from aiosh.monitor import run_monitor

        for p in pumps:
            p.hold(True)
        try:
            run_monitor(kernel, interval=parsed.values["d"])
        finally:
            for p in pumps:
                p.hold(False)
        return 0

    shell.builtins.register("top", top, "the live monitor of agents, queues and memory (q returns)", USAGE)
