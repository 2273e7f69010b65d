"""The terminal pumps: background lines wait while the foreground has half a line on screen, are held while the
monitor owns the screen, and come out whole and in order (no model: plain Pipes and a fake stdout)."""

from __future__ import annotations

import io
import time

import pytest
from aiosh.kernel.streams import Pipe

from aiosh.terminal import Pump, Screen

pytestmark = pytest.mark.timeout(20)


def settle(fake: io.StringIO, want: str, seconds: float = 3.0) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and want not in fake.getvalue():
        time.sleep(0.01)
    return fake.getvalue()


class FakeTerminalPump(Pump):
    """A Pump whose terminal is a StringIO (pytest swaps sys.stdout between a fixture and its test)."""

    fake: io.StringIO

    def _target(self) -> io.StringIO:
        return self.fake


@pytest.fixture
def screen():
    fake = io.StringIO()
    out, bg = Pipe("out"), Pipe("bg")
    pump = FakeTerminalPump(out, "stdout", side=bg, screen=Screen())
    pump.fake = fake
    pump.start()
    yield fake, out, bg, pump
    out.close()
    bg.close()
    pump.join(2)


def test_background_line_waits_for_the_foreground_line_to_end(screen) -> None:
    fake, out, bg, pump = screen
    out.write("Paris is")
    settle(fake, "Paris is")
    bg.write("[2] Rome is old.\n")
    time.sleep(0.3)
    assert fake.getvalue() == "Paris is"  # not inside the foreground's line
    out.write(" big.\n")
    assert settle(fake, "Rome") == "Paris is big.\n[2] Rome is old.\n"


def test_held_lines_go_out_where_the_foreground_line_ends_not_after_what_follows(screen) -> None:
    fake, out, bg, pump = screen
    out.write("fg-start ")
    settle(fake, "fg-start")
    bg.write("[1] bg\n")
    time.sleep(0.3)
    out.write("fg-end\nEND\n")  # one chunk: the line's end and what the foreground wrote after the job's line
    assert settle(fake, "END") == "fg-start fg-end\n[1] bg\nEND\n"


def test_background_lines_are_held_while_the_monitor_is_open(screen) -> None:
    fake, out, bg, pump = screen
    pump.hold(True)
    bg.write("one\n")
    bg.write("two\n")
    time.sleep(0.3)
    assert fake.getvalue() == ""
    pump.hold(False)
    assert settle(fake, "two") == "one\ntwo\n"


def test_at_the_prompt_held_lines_start_on_a_line_of_their_own(screen) -> None:
    fake, out, bg, pump = screen
    out.write("no newline")
    settle(fake, "no newline")
    bg.write("late\n")
    time.sleep(0.2)
    pump.drain(0.2)
    pump.set_line_mode(True)  # the command ended and the prompt comes
    assert settle(fake, "late") == "no newline\nlate\n"
