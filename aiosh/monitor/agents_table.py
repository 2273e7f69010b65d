"""The agents table: one row per process, updated in place by pid so the cursor stays on its agent.

Sorting, filtering and the tree are view state kept here; `arrange()` is the pure function that applies them
(testable without an app). Rows are never rebuilt on a refresh: changed cells are updated, rows of collected
processes removed, new ones added, and when the order changes the rows are re-sorted in place and the cursor
is put back on the pid it was on (dolphie's approach).

Drawing: DataTable redraws every visible cell through Rich whenever any cell changes (its caches are keyed by
one update counter), about 20 ms a refresh for a dozen agents — the pane's largest cost, taken from the
engine's cores. `render_line` here draws a row as one Text and keeps each row's strip until that row's cells,
the cursor, the width or the focus change, so a refresh redraws only the rows whose numbers moved.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.strip import Strip
from textual.widgets import DataTable

from aiosh.kernel.requests import SCHED_CLASSES
from aiosh.monitor.collector import AgentRow
from aiosh.monitor.format import fmt_bytes, fmt_count, fmt_elapsed, fmt_rate, fmt_time
from aiosh.monitor.messages import SelectedExited, SelectionMoved

STATE_RANK = {"R": 0, "S": 1, "T": 2, "Z": 3}
CLASS_RANK = {name: i for i, name in enumerate(SCHED_CLASSES)}
STATE_STYLE = {"R": "bold green", "S": "", "T": "bold yellow", "Z": "red"}
CMD_MAX = 60


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    width: int | None  # None: what the others leave (CMD, the last column)
    hotkey: str  # the sort key (shift + letter), as in top/htop
    numeric: bool
    sort_value: Callable[[AgentRow], Any]
    desc_first: bool = False  # the first press sorts largest first (%TOK, KV, TIME …)
    help: str = ""
    drop: int = 0  # on a narrow terminal columns go in this order (1 first); 0: always shown


def _kv(row: AgentRow) -> str:
    if row.kv_tokens is None:
        return "?"  # on a remote backend: the server holds its KV, unknown here (never shown as 0)
    return f"{row.kv_tokens} {fmt_bytes(row.kv_bytes or 0)}" if row.kv_tokens else "0"


def _kv_sort(row: AgentRow) -> tuple[int, int]:
    """Unknown KV sorts below every known figure (last when largest first)."""
    if row.kv_tokens is None:
        return (-1, -1)
    return (row.kv_tokens, row.kv_bytes or 0)


COLUMNS: tuple[Column, ...] = (
    Column("pid", "PID", 5, "P", True, lambda r: r.pid, help="process id"),
    Column("ppid", "PPID", 5, "U", True, lambda r: r.ppid, help="parent's pid (0 = the shell)", drop=2),
    Column("stat", "STAT", 5, "S", False, lambda r: (STATE_RANK.get(r.state, 9), r.stat),
           help="state R S T Z; < high priority (nice < 0), N low (nice > 0)"),
    Column("ni", "NI", 3, "N", True, lambda r: r.nice, help="nice, -20 … 19"),
    Column("pri", "PRI", 4, "I", True, lambda r: r.pri, help="priority: 20 + nice, -10 while boosted", drop=4),
    Column("class", "CLASS", 11, "L", False, lambda r: (CLASS_RANK.get(r.sched_class, 9), r.sched_class),
           help="scheduling class", drop=1),
    Column("tok_pct", "%TOK", 5, "C", True, lambda r: r.tok_pct, True,
           help="share of the tokens evaluated in the last interval (top's %CPU)"),
    Column("tok_s", "TOK/S", 6, "R", True, lambda r: r.tok_s, True, help="generated tokens per second", drop=7),
    Column("in", "IN", 6, "V", True, lambda r: r.tokens_in, True,
           help="prompt tokens evaluated, total (IN in ps and logs too)", drop=8),
    Column("out", "OUT", 6, "O", True, lambda r: r.tokens_out, True,
           help="tokens generated, total (OUT in ps and logs too)"),
    Column("kv", "KV", 11, "M", True, _kv_sort, True,
           help="KV cache held: tokens and bytes (? on a remote backend: the server holds it)", drop=6),
    Column("swap", "SWAP", 6, "W", True, lambda r: r.swapped_bytes, True, help="KV swapped out to RAM", drop=3),
    Column("time", "TIME", 8, "T", True, lambda r: r.decode_s, True, help="decode time charged to it"),
    Column("elapsed", "ELAPSED", 8, "E", True, lambda r: r.elapsed, True, help="wall time since spawn", drop=5),
    Column("cmd", "CMD", None, "A", False, lambda r: r.cmd.lower(), help="agent and arguments"),
)
COLUMN_BY_KEY = {c.key: c for c in COLUMNS}
FIXED_WIDTH = sum(c.width or 0 for c in COLUMNS) + 2 * len(COLUMNS)  # DataTable pads each cell by 1 each side
CMD_MIN = 22  # the command line keeps at least this many cells: columns are dropped before it shrinks below


def fitting_columns(width: int) -> tuple[Column, ...]:
    """The columns shown at this width (htop's rule: the list stays readable): the droppable ones go, least
    useful first, until the rest and CMD_MIN cells of command line fit."""
    shown = list(COLUMNS)
    for col in sorted((c for c in COLUMNS if c.drop), key=lambda c: c.drop):
        if sum((c.width or 0) + 2 for c in shown) + CMD_MIN <= width:
            break
        shown.remove(col)
    return tuple(shown)


def matches(row: AgentRow, text: str) -> bool:
    """The filter: a case-insensitive substring of the command line, or the exact pid."""
    t = text.strip().lower()
    return not t or t in row.cmd.lower() or t == str(row.pid)


def arrange(
    rows: Iterable[AgentRow], sort_key: str = "pid", reverse: bool = False, filter_text: str = "", tree: bool = False,
) -> list[tuple[AgentRow, str]]:
    """Filter, sort and (optionally) nest rows under their parents; returns (row, tree prefix) in display order.

    In the tree, siblings are sorted by the sort column; a process whose parent is not shown is a root.
    """
    col = COLUMN_BY_KEY.get(sort_key, COLUMNS[0])
    shown = [r for r in rows if matches(r, filter_text)]

    def order(rs: list[AgentRow]) -> list[AgentRow]:
        rs = sorted(rs, key=lambda r: r.pid)  # ties in pid order whichever the direction
        return sorted(rs, key=col.sort_value, reverse=reverse)

    if not tree:
        return [(r, "") for r in order(shown)]
    pids = {r.pid for r in shown}
    children: dict[int, list[AgentRow]] = {}
    roots: list[AgentRow] = []
    for r in shown:
        if r.ppid in pids and r.ppid != r.pid:
            children.setdefault(r.ppid, []).append(r)
        else:
            roots.append(r)
    out: list[tuple[AgentRow, str]] = []

    def walk(r: AgentRow, lead: str, last: bool, depth: int) -> None:
        out.append((r, "" if depth == 0 else lead + ("└─ " if last else "├─ ")))
        kids = order(children.get(r.pid, []))
        below = "" if depth == 0 else lead + ("   " if last else "│  ")
        for i, k in enumerate(kids):
            walk(k, below, i == len(kids) - 1, depth + 1)

    for r in order(roots):
        walk(r, "", True, 0)
    return out


def cells(row: AgentRow, prefix: str = "", cmd_width: int = CMD_MAX) -> tuple[Text, ...]:
    """One row's cells, in COLUMNS order; the command line is cut to cmd_width with an ellipsis."""

    def num(s: str, style: str = "") -> Text:
        return Text(s, style=style, justify="right")

    cmd = prefix + row.cmd
    if row.state == "Z":
        cmd += f"  <exited {row.status}>"
    if len(cmd) > cmd_width:
        cmd = cmd[: max(0, cmd_width - 1)] + "…"
    return (
        num(str(row.pid)),
        num(str(row.ppid)),
        Text(row.stat, style=STATE_STYLE.get(row.state, "")),
        num(str(row.nice), "bold" if row.nice < 0 else ("dim" if row.nice > 0 else "")),
        num(str(row.pri), "bold magenta" if row.boosted else ""),
        Text(row.sched_class),
        num(f"{row.tok_pct:.1f}", "bold cyan" if row.tok_pct >= 0.05 else "dim"),
        num(fmt_rate(row.tok_s), "" if row.tok_s > 0 else "dim"),
        num(fmt_count(row.tokens_in)),
        num(fmt_count(row.tokens_out)),
        num(_kv(row), "" if row.kv_tokens else "dim"),  # 0 and ? (unknown) both dim
        num(fmt_bytes(row.swapped_bytes) if row.swapped_bytes else "0", "yellow" if row.swapped_bytes else "dim"),
        num(fmt_time(row.decode_s)),
        num(fmt_elapsed(row.elapsed)),
        Text(cmd, style="dim" if row.state == "Z" else ""),
    )


class AgentsTable(DataTable):
    """The process list. `show(rows)` on each refresh; `set_sort`, `set_filter`, `toggle_tree` change the view."""

    BINDINGS = [
        Binding("enter", "select_cursor", "Detail", show=False),  # Enter opens the agent (RowSelected)
        Binding("home", "scroll_top", "First", show=False),  # the first and last agent, as in top
        Binding("end", "scroll_bottom", "Last", show=False),
    ]
    DEFAULT_CSS = """
    AgentsTable {
        height: 1fr;
        border: round $primary 60%;
        border-title-color: $text;
        border-title-style: bold;
        border-subtitle-color: $text-muted;
    }
    AgentsTable:focus {
        border: round $primary;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002 - Textual's name
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.sort_key = "pid"
        self.reverse = False
        self.filter_text = ""
        self.tree_view = False
        self.agent_rows: tuple[AgentRow, ...] = ()
        self._cells: dict[int, tuple[Text, ...]] = {}
        self._shown = 0
        self.cmd_width = CMD_MAX
        self._order: list[int] = []  # pids in display order (the same order DataTable keeps)
        self._version: dict[int, int] = {}  # bumped when a row's cells change
        self._strips: dict[int, tuple[tuple, Strip]] = {}  # pid → (cache key, strip)
        self._header: tuple[tuple, Strip] | None = None
        self._epoch = 0  # bumped when the columns are rebuilt
        self.shown_columns: tuple[Column, ...] = COLUMNS  # those that fit the width (fitting_columns)
        self._pick: tuple[int, ...] = tuple(range(len(COLUMNS)))  # their indexes in COLUMNS

    def on_mount(self) -> None:
        self._build_columns()
        self._update_titles()

    # -- view state ----------------------------------------------------------------------------------------------
    def set_sort(self, key: str) -> None:
        """Sort by a column; the same column again reverses the direction."""
        col = COLUMN_BY_KEY[key]
        if key == self.sort_key:
            self.reverse = not self.reverse
        else:
            self.sort_key, self.reverse = key, col.desc_first
        self._rebuild()

    def _rebuild(self) -> None:
        """New columns (labels or widths changed): clear and add everything again, keeping the selection."""
        selected = self.selected_pid
        self.clear(columns=True)
        self._cells.clear()
        self._strips.clear()
        self._header = None
        self._epoch += 1
        self._build_columns()
        self._render_rows(selected)

    def on_resize(self) -> None:
        """The columns that fit, and CMD takes the width they leave (no horizontal scrolling)."""
        inner = self.size.width - 2  # room for the vertical scrollbar
        shown = fitting_columns(inner)
        width = max(12, inner - sum((c.width or 0) + 2 for c in shown))
        if width != self.cmd_width or shown != self.shown_columns:
            self.cmd_width = width
            self.shown_columns = shown
            self._pick = tuple(COLUMNS.index(c) for c in shown)
            self._rebuild()

    def set_filter(self, text: str) -> None:
        self.filter_text = text
        self._render_rows(self.selected_pid)

    def toggle_tree(self) -> bool:
        self.tree_view = not self.tree_view
        self._render_rows(self.selected_pid)
        return self.tree_view

    @property
    def selected_pid(self) -> int | None:
        if not self.row_count:
            return None
        row = max(0, min(self.cursor_row, self.row_count - 1))
        try:
            key = self.ordered_rows[row].key.value
        except IndexError:
            return None
        return int(key) if key is not None else None

    @property
    def shown_pids(self) -> list[int]:
        return [int(r.key.value) for r in self.ordered_rows if r.key.value is not None]

    # -- rendering -----------------------------------------------------------------------------------------------
    def show(self, rows: Sequence[AgentRow]) -> None:
        """New rows. The selection stays on its pid (htop); when that agent exits the app is told, and when it
        is gone from the table the selection moves to its neighbour (the next row, else the previous one) and
        the app is told that too."""
        before = {r.pid: r for r in self.agent_rows}
        selected = self.selected_pid
        self.agent_rows = tuple(rows)
        now = {r.pid: r for r in self.agent_rows}
        target = selected
        if selected is not None and selected not in now:
            target = self._neighbour(selected, now)
            old = before.get(selected)
            self.post_message(SelectionMoved(selected, old.agent if old else "", target,
                                             now[target].agent if target is not None else ""))
        elif selected is not None and now[selected].state == "Z" and selected in before \
                and before[selected].state != "Z":
            self.post_message(SelectedExited(selected, now[selected].agent, now[selected].status))
        self._render_rows(target)

    def _neighbour(self, pid: int, now: dict[int, AgentRow]) -> int | None:
        """The row shown after `pid` (else before it) that is still there."""
        order = self._order
        if pid not in order:
            return None
        i = order.index(pid)
        for cand in (*order[i + 1:], *reversed(order[:i])):
            if cand in now and matches(now[cand], self.filter_text):
                return cand
        return None

    def _build_columns(self) -> None:
        for col in self.shown_columns:
            label = col.label
            if col.key == self.sort_key:
                label += "▲" if not self.reverse else "▼"
            text = Text(label, style="bold reverse" if col.key == self.sort_key else "bold",
                        justify="right" if col.numeric else "left")
            self.add_column(text, key=col.key, width=col.width or self.cmd_width)

    def _render_rows(self, selected: int | None) -> None:
        arranged = arrange(self.agent_rows, self.sort_key, self.reverse, self.filter_text, self.tree_view)
        pick = self._pick
        want = {}
        for row, prefix in arranged:
            every = cells(row, prefix, self.cmd_width)
            want[row.pid] = tuple(every[i] for i in pick)
        for pid in [p for p in self._cells if p not in want]:
            self.remove_row(str(pid))
            del self._cells[pid]
            self._strips.pop(pid, None)
        for pid, new in want.items():
            old = self._cells.get(pid)
            if old is None:
                self.add_row(*new, key=str(pid))
            else:
                changed = False
                for col, before, after in zip(self.shown_columns, old, new):
                    if before != after:
                        self.update_cell(str(pid), col.key, after)
                        changed = True
                if not changed:
                    continue
            self._cells[pid] = new
            self._version[pid] = self._version.get(pid, 0) + 1
        order = [row.pid for row, _ in arranged]
        if self.shown_pids != order:
            pos = {pid: i for i, pid in enumerate(order)}
            self.sort("pid", key=lambda cell: pos[int(cell.plain)])
        self._order = order
        if selected is not None and selected in want:
            index = self.get_row_index(str(selected))
            if index != self.cursor_row:
                self.move_cursor(row=index, animate=False)
        self._shown = len(order)
        self._update_titles()

    def _update_titles(self) -> None:
        total = len(self.agent_rows)
        head = f"Agents {total}" if not self.filter_text else f"Agents {self._shown} of {total}"
        col = COLUMN_BY_KEY[self.sort_key]
        extra = [f"sort {col.label}{'▼' if self.reverse else '▲'}"]
        if self.tree_view:
            extra.append("tree")
        if self.filter_text:
            extra.append(f'filter "{self.filter_text}"')
        self.border_title = f"{head} · " + " · ".join(extra)
        self.border_subtitle = "sort: " + " ".join(f"{c.hotkey} {c.label}" for c in COLUMNS)

    # -- drawing (the Line API: one strip per visible line) ---------------------------------------------------
    def render_line(self, y: int) -> Strip:
        width = self.size.width
        scroll_x, scroll_y = self.scroll_offset
        base = self.rich_style
        if self.show_header and self.header_height == 1:
            if y == 0:
                return self._header_strip(width, scroll_x, base)
            y -= 1
        index = y + scroll_y
        if not 0 <= index < len(self._order) or len(self._order) != self.row_count:
            return Strip.blank(width, base)
        pid = self._order[index]
        cursor = self.show_cursor and index == self.cursor_row
        key = (self._version.get(pid, 0), index, cursor, self.has_focus, width, scroll_x, self._epoch,
               self.app.theme, self.zebra_stripes)
        cached = self._strips.get(pid)
        if cached is not None and cached[0] == key:
            return cached[1]
        if cursor:
            style = base + self.get_component_rich_style("datatable--cursor")
        elif self.zebra_stripes:
            style = base + self.get_component_rich_style("datatable--odd-row" if index % 2 else "datatable--even-row")
        else:
            style = base
        strip = self._line(self._cells.get(pid, ()), index, style, cursor, width, scroll_x)
        self._strips[pid] = (key, strip)
        return strip

    def _header_strip(self, width: int, scroll_x: int, base: Style) -> Strip:
        key = (width, scroll_x, self._epoch, self.has_focus, self.app.theme)
        if self._header is not None and self._header[0] == key:
            return self._header[1]
        style = base + self.get_component_rich_style("datatable--header")
        labels = tuple(c.label for c in self.ordered_columns)
        strip = self._line(labels, -1, style, False, width, scroll_x)
        self._header = (key, strip)
        return strip

    def _line(self, cells: tuple[Text, ...], row: int, style: Style, cursor: bool, width: int,
              scroll_x: int) -> Strip:
        """One table line drawn as one Text: each cell fitted to its column and padded by one cell each side,
        with the click metadata DataTable reads (row, column) on every cell."""
        line = Text(end="", no_wrap=True, style=style)
        for i, (col, cell) in enumerate(zip(self.ordered_columns, cells)):
            w = col.get_render_width(self) - 2
            if not isinstance(cell, Text):
                cell = Text(str(cell))
            plain = cell.plain
            if cell_len(plain) > w:
                cell = cell.copy()
                cell.truncate(w, overflow="ellipsis")
                plain = cell.plain
            pad = " " * max(0, w - cell_len(plain))
            start = len(line)
            if cell.justify == "right":
                line.append(" " + pad)
                line.append_text(cell)
                line.append(" ")
            else:
                line.append(" ")
                line.append_text(cell)
                line.append(pad + " ")
            line.stylize(_meta(row, i), start, len(line))
        if cursor:
            line.stylize(self.get_component_rich_style("datatable--cursor"))
        strip = Strip(list(line.render(self.app.console)))
        if scroll_x:
            strip = strip.crop(scroll_x, scroll_x + width)
        return strip.adjust_cell_length(width, style).simplify()


@functools.lru_cache(maxsize=4096)
def _meta(row: int, column: int) -> Style:
    return Style.from_meta({"row": row, "column": column})
