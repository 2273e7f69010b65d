"""`python -m aiosh.shell`: the shell language alone, without a kernel (no agents, no model load).

For conformance runs and quick scripts, where starting the kernel per invocation would cost more than the script.
It takes bash's start-up flags (`-c`, `-e`, `-u`, `-x`, `-i`, `--norc`, `-o NAME`) like `aiosh` does.
"""

from __future__ import annotations

import sys

from .cli_flags import FlagError, parse_flags
from .standalone import run


def main(argv: list[str] | None = None) -> int:
    try:
        flags = parse_flags(sys.argv[1:] if argv is None else argv)
    except FlagError as exc:
        print(f"aiosh: {exc}", file=sys.stderr)
        return 2
    return run(flags)


if __name__ == "__main__":
    sys.exit(main())
