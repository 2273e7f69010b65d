#!/usr/bin/env python
"""Start-up: what a command that needs no model costs, and how soon a fresh shell's first chat answers.

    python bench/startup.py            # 7 runs of each (7 of each chat, ~45 s)
    python bench/startup.py --quick    # 2 runs of each

Prints ONE JSON line on stdout (progress on stderr). Every figure is measured in this run, each command in a
process of its own, runs of the commands interleaved:
  echo      `aiosh -c 'echo hi'`: wall seconds (median) and peak RSS (ru_maxrss of the process and anything it
            waited for) against `bash -c true` (the floor of starting any program). Targets: ≤ 0.3 s, ≤ 150 MB.
  ttft      a fresh `aiosh -c 'chat …'`: seconds from exec to the first byte of the answer, with the engine in
            its own process (shipped) and with `kernel.engine_process = false` (the engine in aiosh's process,
            as before the engine process existed): the baseline for "the first chat is not slower than today".
            Also that in-aiosh engine started with the huge-page tunable the engine process gets
            (engine_in_aiosh_huge_pages_s): what the process split itself costs, huge pages aside.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cpu_model, emit, log, rnd  # noqa: E402
from aiosh.kernel.engine_spawn import child_env  # noqa: E402

TARGET_ECHO_S = 0.3
TARGET_ECHO_MB = 150.0
AIOSH = [sys.executable, "-m", "aiosh.cli"]
CHAT = "chat --max-tokens 4 --temperature 0 'Name a colour.'"


def run_timed(argv: list[str], env: dict, cwd: str, first_byte: bool = False) -> tuple[float, float, float | None]:
    """(wall s, peak RSS MB, seconds to the first byte on stdout or None)."""
    t0 = time.monotonic()
    p = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    first = None
    assert p.stdout is not None
    if first_byte and p.stdout.read(1):
        first = time.monotonic() - t0
    p.stdout.read()
    _pid, status, usage = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: exit {p.returncode}")
    return wall, usage.ru_maxrss / 1024, first


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    runs = 2 if args.quick else 7
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, XDG_CONFIG_HOME=f"{tmp}/c", XDG_DATA_HOME=f"{tmp}/d", XDG_STATE_HOME=f"{tmp}/s")
        thread_dir = Path(tmp, "thread")
        thread_dir.mkdir()
        (thread_dir / "aiosh.toml").write_text("[kernel]\nengine_process = false\n")
        bash, echo, echo_rss = [], [], []
        for i in range(runs):
            log(f"echo run {i + 1}/{runs}")
            bash.append(run_timed(["bash", "-c", "true"], env, tmp)[0])
            wall, rss, _ = run_timed([*AIOSH, "-c", "echo hi"], env, tmp)
            echo.append(wall)
            echo_rss.append(rss)
        # The engine process is started with glibc's huge-page tunable (kernel/engine_spawn.py child_env); an
        # engine in aiosh's own process gets it only if aiosh was started with it: measured both ways.
        huge_env = dict(env, GLIBC_TUNABLES=child_env()["GLIBC_TUNABLES"])
        ttft_proc, ttft_thread, ttft_thread_huge = [], [], []
        for i in range(runs):  # (interleaved: each round's runs see the same machine)
            log(f"chat run {i + 1}")
            ttft_proc.append(run_timed([*AIOSH, "-c", CHAT], env, tmp, first_byte=True)[2])
            ttft_thread.append(run_timed([*AIOSH, "-c", CHAT], env, str(thread_dir), first_byte=True)[2])
            ttft_thread_huge.append(run_timed([*AIOSH, "-c", CHAT], huge_env, str(thread_dir), first_byte=True)[2])
    med = statistics.median
    echo_s, echo_mb = med(echo), max(echo_rss)
    result = {
        "bench": "startup",
        "echo": {"aiosh_s": rnd(echo_s), "bash_true_s": rnd(med(bash)), "aiosh_peak_rss_mb": rnd(echo_mb, 1),
                 "runs": runs, "target_s": TARGET_ECHO_S, "target_mb": TARGET_ECHO_MB,
                 "meets_time": echo_s <= TARGET_ECHO_S, "meets_rss": echo_mb <= TARGET_ECHO_MB},
        "ttft": {"engine_process_s": rnd(med(ttft_proc)), "engine_in_aiosh_s": rnd(med(ttft_thread)),
                 "process_vs_in_aiosh": rnd(med(ttft_thread) / med(ttft_proc)),
                 "engine_in_aiosh_huge_pages_s": rnd(med(ttft_thread_huge)),
                 "process_vs_in_aiosh_huge_pages": rnd(med(ttft_thread_huge) / med(ttft_proc)), "runs": len(ttft_proc)},
        "machine": {"cpu_count": os.cpu_count(), "cpu": cpu_model(), "loadavg_1m_at_start": rnd(load0, 2),
                    "loadavg_1m_at_end": rnd(os.getloadavg()[0], 2)},
    }
    emit(result)


if __name__ == "__main__":
    main()
