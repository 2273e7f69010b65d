"""One agent up close (Enter): its live output (ProcInfo.recent_output) and its recent syscalls.

The app feeds it the `AgentDetail` each collection brings (the collector fetches `Kernel.syscalls(pid)` on its
worker thread while this screen is open); k, s and n act on this agent; Esc or q goes back.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from aiosh.monitor.collector import AgentDetail
from aiosh.monitor.format import fmt_bytes, fmt_time

SYSCALL_COLUMNS = (("id", "ID", 6), ("kind", "KIND", 6), ("wait", "WAIT", 7), ("took", "TOOK", 7),
                   ("in", "IN", 6), ("out", "OUT", 6), ("outcome", "OUTCOME", 16), ("detail", "DETAIL", None))


def describe(d: AgentDetail | None, pid: int) -> Text:
    t = Text(no_wrap=True, overflow="ellipsis")
    if d is None:
        t.append(f"pid {pid}: collecting…", style="dim")
        return t
    p = d.info
    if p is None:
        t.append(f"pid {pid} has been collected: it is no longer in the process table", style="bold red")
        return t
    t.append(f"{p.pid} ", style="bold")
    t.append(p.cmd, style="bold")
    state = p.state + (f" ({p.wchan})" if p.wchan else "")
    if p.state == "Z":
        state += f" exit {p.status}"
    t.append(f"\nstate {state} · ppid {p.ppid} · pgid {p.pgid} · nice {p.nice} · pri {p.pri} · {p.sched_class}",
             style="")
    t.append(" · backend ", style="")
    t.append(getattr(p, "backend", "local") or "local", style="bold")
    kv = (f"KV {p.kv_tokens} ({fmt_bytes(p.kv_bytes or 0)})" if p.kv_tokens is not None
          else "KV ? (held by the server)")
    t.append(f"\nIN {p.tokens_in} · OUT {p.tokens_out} (tokens, as in ps and logs) · {kv} · swapped {fmt_bytes(p.swapped_bytes)}"
             f" · time {fmt_time(p.decode_s)} · switches {p.switches} · syscalls {p.syscalls}", style="dim")
    lim = p.limits
    if lim.max_tokens or lim.max_time or lim.max_kv:
        t.append(f" · limits tokens {lim.max_tokens or '-'} time {lim.max_time or '-'} kv {lim.max_kv or '-'}",
                 style="dim")
    return t


def syscall_cells(r: object) -> tuple[str | Text, ...]:
    def dur(x: float) -> Text:
        return Text(f"{x:.2f}s" if x else "-", justify="right")

    finished = getattr(r, "t_finished", 0.0)
    outcome = getattr(r, "outcome", "") or ("running" if not finished else "")
    return (
        Text(str(getattr(r, "id", "")), justify="right"), str(getattr(r, "kind", "")),
        dur(getattr(r, "waiting_time", 0.0)), dur(getattr(r, "turnaround", 0.0)),
        Text(str(getattr(r, "tokens_in", 0)), justify="right"), Text(str(getattr(r, "tokens_out", 0)), justify="right"),
        Text(outcome[:16], style="green" if outcome.startswith("ok") else ("yellow" if outcome else "dim")),
        str(getattr(r, "detail", "")).replace("\n", " ")[:80],
    )


class AgentScreen(Screen):
    DEFAULT_CSS = """
    AgentScreen #about { height: auto; padding: 0 1; background: $panel; }
    AgentScreen #output-box {
        height: 1fr; border: round $primary 60%; border-title-style: bold; padding: 0 1;
    }
    AgentScreen #calls { height: 14; border: round $secondary 60%; border-title-style: bold; }
    """
    BINDINGS = [Binding("escape,q", "back", "Back")]

    def __init__(self, pid: int) -> None:
        super().__init__()
        self.pid = pid
        self.detail: AgentDetail | None = None
        self._output = ""
        self._calls: dict[int, tuple] = {}

    def compose(self) -> ComposeResult:
        yield Static(describe(None, self.pid), id="about")
        with VerticalScroll(id="output-box") as box:
            box.border_title = "Output (recent)"
            yield Static("", id="output")
        table: DataTable = DataTable(id="calls", cursor_type="row", zebra_stripes=True)
        table.border_title = "Syscalls (recent)"
        yield table
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#calls", DataTable)
        for key, label, width in SYSCALL_COLUMNS:
            table.add_column(label, key=key, width=width)

    def show(self, detail: AgentDetail | None) -> None:
        if detail is None or detail.pid != self.pid:
            return
        self.detail = detail
        self.query_one("#about", Static).update(describe(detail, self.pid))
        info = detail.info
        if info is not None and info.recent_output != self._output:
            self._output = info.recent_output
            box = self.query_one("#output-box", VerticalScroll)
            at_end = box.scroll_y >= box.max_scroll_y - 1
            self.query_one("#output", Static).update(Text(self._output or "(no output yet)"))
            if at_end:
                box.call_after_refresh(box.scroll_end, animate=False)
        if info is not None and info.state == "Z":
            self.query_one("#output-box").border_subtitle = f"exited with status {info.status}"
        table = self.query_one("#calls", DataTable)
        for rec in detail.syscalls:
            new = syscall_cells(rec)
            old = self._calls.get(rec.id)
            if old is None:
                table.add_row(*new, key=str(rec.id))
            elif old != new:
                for (key, _, _), a, b in zip(SYSCALL_COLUMNS, old, new):
                    if a != b:
                        table.update_cell(str(rec.id), key, b)
            self._calls[rec.id] = new

    def action_back(self) -> None:
        self.dismiss(None)
