"""Small modal screens: choose a signal, set a nice value, the help screen."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from aiosh.monitor.agents_table import COLUMNS

SIGNAL_CHOICES: tuple[tuple[str, int, str], ...] = (
    ("TERM", 15, "terminate; the agent may clean up"),
    ("INT", 2, "interrupt, as Ctrl-C"),
    ("HUP", 1, "hang up"),
    ("KILL", 9, "kill at once, no clean-up"),
    ("STOP", 19, "stop: keeps its memory, gets no tokens"),
    ("CONT", 18, "continue a stopped agent"),
    ("TSTP", 20, "terminal stop, as Ctrl-Z"),
    ("USR1", 10, "user-defined signal 1"),
)

MODAL_CSS = """
{name} {{
    align: center middle;
}}
{name} > Vertical {{
    width: {width};
    height: auto;
    max-height: 90%;
    border: thick $primary 80%;
    background: $surface;
    padding: 0 1;
}}
{name} .title {{ text-style: bold; width: 100%; margin-bottom: 1; }}
{name} .hint {{ color: $text-muted; width: 100%; margin-top: 1; }}
{name} .error {{ color: $error; width: 100%; }}
"""


class SignalModal(ModalScreen[int | None]):
    """Pick the signal to send; Enter sends the highlighted one (TERM at first), Esc cancels."""

    DEFAULT_CSS = MODAL_CSS.format(name="SignalModal", width=56) + """
    SignalModal OptionList { height: auto; max-height: 12; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, pid: int, cmd: str) -> None:
        super().__init__()
        self.pid = pid
        self.cmd = cmd

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"Send a signal to {self.pid}: {self.cmd[:40]}", classes="title")
            yield OptionList(
                *(Option(Text.assemble((f"{name:<5}", "bold"), f"{num:>3}  ", (what, "dim")), id=str(num))
                  for name, num, what in SIGNAL_CHOICES),
                id="signals",
            )
            yield Label("Enter send · Esc cancel", classes="hint")

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        options.highlighted = 0
        options.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(int(event.option.id or 15))

    def action_cancel(self) -> None:
        self.dismiss(None)


class SortModal(ModalScreen[str | None]):
    """htop's F6 "Sort by": the columns, the current one highlighted; Enter sorts by the chosen one."""

    DEFAULT_CSS = MODAL_CSS.format(name="SortModal", width=56) + """
    SortModal OptionList { height: auto; max-height: 16; }
    """
    BINDINGS = [Binding("escape,f6", "cancel", "Cancel")]

    def __init__(self, current: str) -> None:
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Sort by", classes="title")
            yield OptionList(
                *(Option(Text.assemble((f"{c.label:<8}", "bold"), (c.help, "dim")), id=c.key) for c in COLUMNS),
                id="columns",
            )
            yield Label("Enter sort (the same column again: reverse) · Esc cancel", classes="hint")

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        keys = [c.key for c in COLUMNS]
        options.highlighted = keys.index(self.current) if self.current in keys else 0
        options.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)


class NiceModal(ModalScreen[int | None]):
    """Ask for a nice value (−20 … 19); Enter sets it, Esc cancels."""

    DEFAULT_CSS = MODAL_CSS.format(name="NiceModal", width=52)
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, pid: int, cmd: str, current: int) -> None:
        super().__init__()
        self.pid = pid
        self.cmd = cmd
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"Renice {self.pid}: {self.cmd[:40]}", classes="title")
            yield Input(placeholder=f"nice now {self.current}; new value -20 … 19", type="integer", id="nice")
            yield Label("", classes="error", id="error")
            yield Label("lower runs sooner · Enter set · Esc cancel", classes="hint")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value.strip()
        try:
            value = int(text)
        except ValueError:
            self.query_one("#error", Label).update(f"'{text}' is not a whole number")
            return
        if not -20 <= value <= 19:
            self.query_one("#error", Label).update(f"{value} is out of range: nice is -20 … 19")
            return
        self.dismiss(value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    """The key bindings and what each column means."""

    DEFAULT_CSS = MODAL_CSS.format(name="HelpScreen", width=84) + """
    HelpScreen VerticalScroll { height: auto; max-height: 34; }
    """
    BINDINGS = [Binding("escape,q,question_mark,f1", "close", "Close")]

    def __init__(self, keys: Sequence[tuple[str, str]]) -> None:
        super().__init__()
        self.keys = list(keys)

    def compose(self) -> ComposeResult:
        t = Text()
        t.append("Keys\n", style="bold underline")
        for key, what in self.keys:
            t.append(f"  {key:<12}", style="bold cyan")
            t.append(what + "\n")
        t.append("\nSort (shift + letter; again to reverse; or click a header)\n", style="bold underline")
        for c in COLUMNS:
            t.append(f"  {c.hotkey:<3}", style="bold cyan")
            t.append(f"{c.label:<8}", style="bold")
            t.append(c.help + "\n", style="")
        t.append("\nStates: R decoding or in a tool · S waiting · T stopped · Z exited, not yet collected\n",
                 style="dim")
        t.append("Timeline: one column per engine step; █ decoded a token, ▒ prefilled prompt tokens", style="dim")
        with Vertical():
            yield Label("aiosh monitor — help", classes="title")
            with VerticalScroll():
                yield Static(t)
            yield Label("Esc close", classes="hint")

    def action_close(self) -> None:
        self.dismiss(None)
