"""The monitor app: top/htop for agents.

Data flow (dolphie's shape): a timer starts a collection on a worker thread (`Collector.collect`: the kernel's
snapshot, rates, queues); the worker posts `SnapshotCollected`; the handler hands each widget its part; only
then is the timer re-armed, so refreshes never overlap however slow a collection is. The UI thread calls no
kernel method but the quick ones (`signal`, `renice`), and treats a process that has just exited
(`NoSuchProcess`, a LookupError, or a zombie that ignores signals) as news to tell, not an error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual import events, on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import ModalScreen
from textual.timer import Timer
from textual.widgets import DataTable, Footer

from aiosh.monitor.agent_detail import AgentScreen
from aiosh.monitor.agents_table import COLUMN_BY_KEY, COLUMNS, AgentsTable
from aiosh.monitor.backends_panel import BackendsPanel
from aiosh.monitor.collector import AgentRow, Collector, MonitorData
from aiosh.monitor.filter_bar import FilterBar
from aiosh.monitor.header import HeaderBar
from aiosh.monitor.log_panel import LogPanel
from aiosh.monitor.memory_panel import MemoryPanel
from aiosh.monitor.messages import CollectionFailed, SelectedExited, SelectionMoved, SnapshotCollected
from aiosh.monitor.modals import SIGNAL_CHOICES, HelpScreen, NiceModal, SignalModal, SortModal
from aiosh.monitor.scheduler_panel import SchedulerPanel
from aiosh.monitor.summary import Summary
from aiosh.monitor.throughput import ThroughputPanel
from aiosh.monitor.timeline import MAX_STRIPS, Timeline

if TYPE_CHECKING:
    from aiosh.kernel.kernel import Kernel
    from aiosh.kernel.streams import Pipe

INTERVALS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
SIGSTOP, SIGCONT = 19, 18
SIGNAL_NAMES = {num: name for name, num, _ in SIGNAL_CHOICES}
LIST_ACTIONS = {"inspect", "filter", "tree", "sort"}
LIST_ACTIONS = LIST_ACTIONS | {"sort_menu"}
MAIN_ACTIONS = LIST_ACTIONS | {"kill", "stop_continue", "renice", "nice_step", "pause", "slower", "faster", "help",
                               "quit"}
# Layouts by terminal height (htop's rule: the process list first): at FULL_HEIGHT and above every panel; below it
# the panels collapse into one line each (Summary) and the timeline keeps SHORT_STRIPS strips; below
# SMALL_HEIGHT the timeline collapses into a line too.
FULL_HEIGHT = 40
SMALL_HEIGHT = 28
SHORT_STRIPS = 3

# (keys as shown, what they do): the help screen's list; the footer shows the bindings marked show=True.
KEY_HELP: tuple[tuple[str, str], ...] = (
    ("↑ ↓ PgUp PgDn", "move the selection (it follows its agent; when the agent is gone, its neighbour)"),
    ("k F9", "kill: choose a signal for the selected agent (TERM by default)"),
    ("s", "stop the selected agent (STOP), or continue it if stopped (CONT)"),
    ("n", "renice the selected agent (-20 … 19)"),
    ("F7 F8", "nice - 1 (higher priority) / nice + 1 (lower), as htop"),
    ("Enter", "the agent's live output and its syscalls (Esc back)"),
    ("/ F4", "filter by command line or pid (Enter keep, Esc clear)"),
    ("t F5", "tree view: children under their parents"),
    ("F6", "sort by: choose a column"),
    ("P C R M T N …", "sort by a column (see below); again to reverse"),
    ("p", "pause / resume refreshing"),
    ("+  -", "refresh interval longer / shorter (0.1 … 10 s)"),
    ("? F1", "this help"),
    ("q F10", "back: quit the monitor (from an agent's screen: back to the list)"),
)


class MonitorApp(App[None]):
    """A live pane of the kernel: scheduler queues, memory, throughput, backends, timeline, agents (and a log)."""

    TITLE = "aiosh monitor"
    ENABLE_COMMAND_PALETTE = False
    CSS = """
    Screen { layout: vertical; }
    #panels { height: 14; }
    #panels > * { width: 1fr; }
    #scheduler { width: 5fr; }
    #memory { width: 4fr; }
    #throughput { width: 4fr; }
    """
    # htop's function keys are the ones the footer shows (F1 Help … F10 Quit); the letters do the same.
    BINDINGS = [
        Binding("f1,question_mark", "help", "Help", key_display="F1"),
        Binding("f4", "filter", "Filter", key_display="F4"),
        Binding("f5", "tree", "Tree", key_display="F5"),
        Binding("f6", "sort_menu", "SortBy", key_display="F6"),
        Binding("f7", "nice_step(-1)", "Nice-", key_display="F7"),
        Binding("f8", "nice_step(1)", "Nice+", key_display="F8"),
        Binding("f9", "kill", "Kill", key_display="F9"),
        Binding("f10", "quit", "Quit", key_display="F10"),
        Binding("s", "stop_continue", "Stop/Cont", show=False),
        Binding("enter", "inspect", "Detail", show=False),
        Binding("k", "kill", "Kill", show=False),
        Binding("n", "renice", "Nice", show=False),
        Binding("slash", "filter", "Filter", key_display="/", show=False),
        Binding("t", "tree", "Tree", show=False),
        Binding("p", "pause", "Pause", show=False),
        Binding("plus", "slower", "Slower", key_display="+", show=False),
        Binding("minus", "faster", "Faster", key_display="-", show=False),
        Binding("q", "quit", "Quit", show=False),
        *(Binding(c.hotkey, f"sort('{c.key}')", f"Sort {c.label}", show=False) for c in COLUMNS),
    ]

    def __init__(self, kernel: Kernel | Any, log_source: Pipe | None = None, interval: float = 0.5) -> None:
        super().__init__()
        self.kernel = kernel
        self.log_source = log_source
        self.interval = max(0.05, float(interval))
        self.collector = Collector(kernel)
        memory = getattr(kernel, "memory", None)
        if memory is not None and hasattr(memory, "stats"):
            self.collector.memory_hook = lambda snap: {p.pid: memory.stats(p.pid).resident_tokens for p in snap.procs}
        self.data: MonitorData | None = None
        self.paused = False
        self.collections = 0  # refreshes rendered (tests wait on this)
        self.notices: list[str] = []  # every notification shown, newest last
        self._in_flight = False
        self._timer: Timer | None = None
        self.header_bar = HeaderBar(id="header")
        self.scheduler_panel = SchedulerPanel(id="scheduler")
        self.memory_panel = MemoryPanel(id="memory")
        self.throughput_panel = ThroughputPanel(id="throughput")
        self.backends_panel = BackendsPanel(id="backends")
        self.timeline = Timeline(id="timeline")
        self.summary = Summary(id="summary")
        self.layout_mode = ""  # full | medium | small: set from the terminal's size
        self.table = AgentsTable(id="agents")
        self.filter_bar = FilterBar(id="filter")
        self.log_panel = LogPanel(log_source, title="Output", id="log") if log_source is not None else None

    def compose(self) -> ComposeResult:
        yield self.header_bar
        yield self.summary
        with Horizontal(id="panels"):
            yield self.scheduler_panel
            yield self.memory_panel
            yield self.throughput_panel
        yield self.backends_panel
        yield self.timeline
        yield self.table
        yield self.filter_bar
        if self.log_panel is not None:
            yield self.log_panel
        yield Footer()

    def on_mount(self) -> None:
        self._fit(self.size.height)
        self.table.focus()
        self.call_after_refresh(self.refresh_now)

    def on_resize(self, event: events.Resize) -> None:
        self._fit(event.size.height)

    def _fit(self, height: int) -> None:
        """Give the agents table its rows first: the panels collapse into one line each below FULL_HEIGHT, and
        the timeline into a line below SMALL_HEIGHT."""
        mode = "full" if height >= FULL_HEIGHT else ("medium" if height >= SMALL_HEIGHT else "small")
        if mode == self.layout_mode:
            return
        self.layout_mode = mode
        full = mode == "full"
        self.query_one("#panels").display = full
        self.backends_panel.display = full
        self.summary.display = not full
        self.summary.with_timeline = mode == "small"
        self.summary.show(self.data)
        self.timeline.display = mode != "small"
        self.timeline.set_max_strips(MAX_STRIPS if full else SHORT_STRIPS)
        if self.log_panel is not None:
            self.log_panel.styles.height = 9 if full else (6 if mode == "medium" else 4)

    # --- the refresh cycle ------------------------------------------------------------------------------------
    def _top(self) -> object:
        """The active screen, or None while the app starts or stops (App.screen raises then)."""
        return self.screen_stack[-1] if self.screen_stack else None

    def refresh_now(self) -> None:
        """Collect now (unless paused or a collection is already running); the timer is re-armed after it."""
        if self.paused or self._in_flight or not self.screen_stack:
            return
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self._in_flight = True
        screen = self._top()
        self._collect(screen.pid if isinstance(screen, AgentScreen) else None)

    @work(thread=True, exit_on_error=False, group="collect", name="collect")
    def _collect(self, detail_pid: int | None) -> None:
        try:
            data = self.collector.collect(detail_pid)
        except Exception as exc:  # noqa: BLE001 - shown, and the next refresh tries again
            self.post_message(CollectionFailed(f"{type(exc).__name__}: {exc}"))
            return
        self.post_message(SnapshotCollected(data))

    def _rearm(self) -> None:
        self._in_flight = False
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        if not self.paused:
            self._timer = self.set_timer(self.interval, self.refresh_now, name="refresh")

    def on_snapshot_collected(self, message: SnapshotCollected) -> None:
        try:
            self._render_data(message.data)
        finally:
            self._rearm()

    def on_collection_failed(self, message: CollectionFailed) -> None:
        self._rearm()
        self.say(f"refresh failed: {message.error}", severity="error")

    def _render_data(self, data: MonitorData) -> None:
        self.collections += 1
        if data == self.data:
            return  # nothing changed (a paused or replayed kernel): nothing to redraw
        self.data = data
        self.header_bar.show(data.header, self.interval, self.paused)
        self.scheduler_panel.show(data.scheduler)
        self.memory_panel.show(data.memory)
        self.throughput_panel.show(data.throughput)
        self.backends_panel.show(data.backends)
        self.timeline.show(data.timeline)
        self.summary.show(data)
        self.table.show(data.agents)
        screen = self._top()
        if isinstance(screen, AgentScreen):
            screen.show(data.detail)

    # --- helpers ------------------------------------------------------------------------------------------------
    def say(self, text: str, severity: str = "information") -> None:
        self.notices.append(text)
        self.notify(text, severity=severity, timeout=4)  # type: ignore[arg-type]

    def target_pid(self) -> int | None:
        """The agent keys act on: the one on screen in its detail view, else the table's selection."""
        screen = self._top()
        if isinstance(screen, AgentScreen):
            return screen.pid
        return self.table.selected_pid

    def row(self, pid: int) -> AgentRow | None:
        return self.data.agent(pid) if self.data is not None else None

    def _target(self) -> tuple[int, AgentRow | None] | None:
        pid = self.target_pid()
        if pid is None:
            self.say("no agent selected", severity="warning")
            return None
        row = self.row(pid)
        if row is None or row.state == "Z":
            self._gone(pid, row, collected=row is None)
            return None
        return pid, row

    def _gone(self, pid: int, row: AgentRow | None = None, collected: bool = False) -> None:
        if collected:
            self.say(f"{pid} has exited and been collected: no such process", severity="warning")
        elif row is not None and row.state == "Z" and row.status is not None:
            self.say(f"{pid} ({row.agent}) has exited with status {row.status}", severity="warning")
        else:
            self.say(f"{pid} has exited", severity="warning")
        self.refresh_now()

    def _signal(self, pid: int, num: int) -> bool:
        """Send one signal from the UI thread (a quick kernel call); False when the agent has just exited."""
        try:
            sent = self.kernel.signal(pid, num)
        except LookupError:
            self._gone(pid, collected=True)
            return False
        if not sent:  # a zombie ignores signals
            self._gone(pid)
            return False
        self.say(f"sent {SIGNAL_NAMES.get(num, num)} to {pid}")
        self.refresh_now()
        return True

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Keys of the main screen do nothing under a modal; the list's own keys nothing on an agent's screen."""
        screen = self._top()
        if isinstance(screen, ModalScreen) and action in MAIN_ACTIONS:
            return False
        return not (isinstance(screen, AgentScreen) and action in LIST_ACTIONS)

    # --- actions -----------------------------------------------------------------------------------------------
    def action_kill(self) -> None:
        target = self._target()
        if target is None:
            return
        pid, row = target

        def chosen(num: int | None) -> None:
            if num is not None:
                self._signal(pid, num)

        self.push_screen(SignalModal(pid, row.cmd if row else str(pid)), chosen)

    def action_stop_continue(self) -> None:
        target = self._target()
        if target is None:
            return
        pid, row = target
        self._signal(pid, SIGCONT if row is not None and row.state == "T" else SIGSTOP)

    def action_renice(self) -> None:
        target = self._target()
        if target is None:
            return
        pid, row = target

        def chosen(value: int | None) -> None:
            if value is None:
                return
            try:
                got = self.kernel.renice(pid, value)
            except LookupError:
                self._gone(pid, collected=True)
                return
            self.say(f"{pid}: nice {got}")
            self.refresh_now()

        self.push_screen(NiceModal(pid, row.cmd if row else str(pid), row.nice if row else 0), chosen)

    def action_inspect(self) -> None:
        pid = self.table.selected_pid
        if pid is None or isinstance(self._top(), AgentScreen):
            return
        self.push_screen(AgentScreen(pid), lambda _: self.refresh_now())
        self.call_after_refresh(self.refresh_now)

    def on_selection_moved(self, message: SelectionMoved) -> None:
        gone = f"{message.gone} ({message.gone_agent})" if message.gone_agent else str(message.gone)
        if message.now is None:
            self.say(f"{gone} is gone: no agent left to select", severity="warning")
        else:
            self.say(f"{gone} is gone: selection moved to {message.now} ({message.now_agent})", severity="warning")

    def on_selected_exited(self, message: SelectedExited) -> None:
        self.say(f"{message.pid} ({message.agent}) has exited with status {message.status}", severity="warning")

    @on(DataTable.RowSelected, "#agents")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_inspect()

    @on(DataTable.HeaderSelected, "#agents")
    def _header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        if event.column_key.value in COLUMN_BY_KEY:
            self.table.set_sort(event.column_key.value)

    def action_sort(self, key: str) -> None:
        self.table.set_sort(key)

    def action_sort_menu(self) -> None:
        def chosen(key: str | None) -> None:
            if key is not None:
                self.table.set_sort(key)

        self.push_screen(SortModal(self.table.sort_key), chosen)

    def action_nice_step(self, delta: int) -> None:
        """F7/F8: nice one step down (runs sooner) or up, as htop's Nice - and Nice +."""
        target = self._target()
        if target is None:
            return
        pid, row = target
        want = max(-20, min(19, (row.nice if row else 0) + delta))
        try:
            got = self.kernel.renice(pid, want)
        except LookupError:
            self._gone(pid, collected=True)
            return
        self.say(f"{pid}: nice {got}")
        self.refresh_now()

    def action_tree(self) -> None:
        self.table.toggle_tree()

    def action_filter(self) -> None:
        self.filter_bar.open()

    @on(FilterBar.Changed, "#filter")
    def _filter_changed(self, event: FilterBar.Changed) -> None:
        self.table.set_filter(event.value)

    @on(FilterBar.Submitted, "#filter")
    def _filter_submitted(self, event: FilterBar.Submitted) -> None:
        self.filter_bar.close()
        self.table.focus()

    @on(FilterBar.Cleared)
    def _filter_cleared(self) -> None:
        self.table.set_filter("")
        self.table.focus()

    def action_pause(self) -> None:
        self.paused = not self.paused
        self.header_bar.show(None, self.interval, self.paused)
        if self.paused:
            if self._timer is not None:
                self._timer.stop()
                self._timer = None
        else:
            self.refresh_now()

    def _set_interval(self, value: float) -> None:
        self.interval = value
        self.header_bar.show(None, self.interval, self.paused)
        self.say(f"refresh every {value:g} s")
        if self._timer is not None and not self._in_flight:  # re-arm with the new interval
            self._rearm()

    def action_slower(self) -> None:
        longer = [i for i in INTERVALS if i > self.interval + 1e-9]
        self._set_interval(longer[0] if longer else INTERVALS[-1])

    def action_faster(self) -> None:
        shorter = [i for i in INTERVALS if i < self.interval - 1e-9]
        self._set_interval(shorter[-1] if shorter else INTERVALS[0])

    def action_help(self) -> None:
        if not isinstance(self._top(), HelpScreen):
            self.push_screen(HelpScreen(KEY_HELP))

