"""The monitor: a live Textual pane of the kernel — scheduler queues, memory, throughput, backends, timeline, agents.

    from aiosh.monitor import run_monitor, MonitorApp
    run_monitor(kernel)                      # full screen until q; the kernel keeps running on its threads
    run_monitor(kernel, log_source=pipe)     # plus a panel with the pipe's text (aiosh --monitor SCRIPT)

The monitor uses only the kernel's public API (`snapshot`, `signal`, `renice`, `syscalls`).
"""

from __future__ import annotations

import signal
import threading
from typing import TYPE_CHECKING, Any

from aiosh.monitor.app import KEY_HELP, MonitorApp
from aiosh.monitor.collector import Collector, MonitorData

if TYPE_CHECKING:
    from aiosh.kernel.kernel import Kernel
    from aiosh.kernel.streams import Pipe

__all__ = ["KEY_HELP", "Collector", "MonitorApp", "MonitorData", "run_monitor"]

_SAVED_SIGNALS = tuple(
    s for s in (getattr(signal, n, None) for n in ("SIGINT", "SIGTSTP", "SIGCONT", "SIGWINCH")) if s is not None
)


def run_monitor(kernel: Kernel | Any, *, log_source: Pipe | None = None, interval: float = 0.5) -> None:
    """Run the monitor full screen on this thread until the user presses q.

    Must not be called from inside a running asyncio loop (Textual's `App.run` starts its own). Signal
    handlers that Textual's driver replaces are saved and put back afterwards, so a shell that installed its
    own SIGINT/SIGTSTP handlers gets them back.
    """
    main = threading.current_thread() is threading.main_thread()
    saved = {s: signal.getsignal(s) for s in _SAVED_SIGNALS} if main else {}
    try:
        MonitorApp(kernel, log_source=log_source, interval=interval).run()
    finally:
        for s, handler in saved.items():
            if handler is not None:
                try:
                    signal.signal(s, handler)
                except (ValueError, OSError):
                    pass
