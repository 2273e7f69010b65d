"""Signal numbers and names, as on Linux (and as bash's `kill -l` prints them)."""

from __future__ import annotations

SIGHUP, SIGINT, SIGKILL, SIGTERM, SIGCONT, SIGSTOP, SIGTSTP, SIGXCPU = 1, 2, 9, 15, 18, 19, 20, 24

NAMES: dict[int, str] = {
    1: "HUP", 2: "INT", 3: "QUIT", 4: "ILL", 5: "TRAP", 6: "ABRT", 7: "BUS", 8: "FPE", 9: "KILL", 10: "USR1",
    11: "SEGV", 12: "USR2", 13: "PIPE", 14: "ALRM", 15: "TERM", 16: "STKFLT", 17: "CHLD", 18: "CONT", 19: "STOP",
    20: "TSTP", 21: "TTIN", 22: "TTOU", 23: "URG", 24: "XCPU", 25: "XFSZ", 26: "VTALRM", 27: "PROF", 28: "WINCH",
    29: "IO", 30: "PWR", 31: "SYS",
}  # fmt: skip
NUMBERS: dict[str, int] = {name: num for num, name in NAMES.items()}

STOPPING = {SIGSTOP, SIGTSTP, 21, 22}
IGNORED_BY_DEFAULT = {17, 23, 28}  # CHLD, URG, WINCH: the default action is to ignore


ALIASES = {"CLD": 17, "POLL": 29, "IOT": 6}  # other names Linux knows for CHLD, IO, ABRT


def parse_signal(spec: str | int, names: dict[int, str] | None = None) -> int:
    """'TERM', 'SIGTERM', 'term', '15' → 15; ValueError for anything else.

    `names`: number → name of the signals there are (default: Linux's 1…31; the shell's `kill` passes the host's,
    real-time signals included)."""
    table = NAMES if names is None else names
    if isinstance(spec, int):
        if spec in table or spec == 0:
            return spec
        raise ValueError(str(spec))
    s = spec.upper()
    if s.isascii() and s.isdigit():
        n = int(s)
        if n in table or n == 0:
            return n
        raise ValueError(spec)
    s = s.removeprefix("SIG")
    for num, name in table.items():
        if name == s:
            return num
    if s in ALIASES:
        return ALIASES[s]
    raise ValueError(spec)


def signal_name(num: int) -> str:
    return NAMES.get(num, str(num))
