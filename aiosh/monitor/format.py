"""Small text formatters shared by the widgets (pure functions: numbers in, short strings out)."""

from __future__ import annotations


def fmt_bytes(n: float) -> str:
    """1536 → '1.5K', 11_800_000 → '11.3M' (binary units, as top and free -h print them)."""
    n = float(n)
    for unit in ("B", "K", "M", "G", "T"):
        if abs(n) < 1024 or unit == "T":
            if unit == "B":
                return f"{int(n)}B"
            return f"{n:.1f}{unit}" if abs(n) < 100 else f"{n:.0f}{unit}"
        n /= 1024
    return f"{n:.0f}T"  # pragma: no cover - the loop always returns


def fmt_time(seconds: float) -> str:
    """top's TIME+: minutes:seconds.hundredths ('0:01.23', '12:04.50'); hours as 'h:mm:ss' past 100 minutes."""
    seconds = max(0.0, float(seconds))
    if seconds >= 6000:
        h, rem = divmod(int(seconds), 3600)
        return f"{h}:{rem // 60:02d}:{rem % 60:02d}"
    m, s = divmod(seconds, 60)
    return f"{int(m)}:{s:05.2f}"


def fmt_elapsed(seconds: float) -> str:
    """ps's ELAPSED: [[dd-]hh:]mm:ss."""
    total = max(0, int(seconds))
    d, rem = divmod(total, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    if d:
        return f"{d}-{h:02d}:{m:02d}:{s:02d}"
    if h:
        return f"{h:02d}:{m:02d}:{s:02d}"
    return f"{m:02d}:{s:02d}"


def fmt_uptime(seconds: float) -> str:
    total = max(0, int(seconds))
    d, rem = divmod(total, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    day = f"{d} day{'s' if d != 1 else ''}, " if d else ""
    return f"{day}{h}:{m:02d}:{s:02d}"


def fmt_rate(x: float) -> str:
    if x <= 0:
        return "0"
    return f"{x:.1f}" if x < 100 else f"{x:.0f}"


def fmt_count(n: int) -> str:
    """12345 → '12345', 1234567 → '1.23M' (keeps a column narrow)."""
    if n < 100_000:
        return str(n)
    if n < 10_000_000:
        return f"{n / 1000:.0f}k"
    return f"{n / 1_000_000:.2f}M"
