#!/usr/bin/env python
"""The OpenAI-compatible door against in-kernel agents: the same 16 prompts and tokens, one kernel, one run.

    python bench/openai_door.py            # 16 x 32 tokens, 2 rounds (about 2 minutes on 2 cores)
    python bench/openai_door.py --quick    # 4 x 8 tokens, 1 round: checks that the script works

Prints ONE JSON line on stdout (progress on stderr). Two configurations on one `Kernel` (so the engine, the policy and
the model are the very same), in alternating order each round:
  kernel  16 built-in `chat` agents spawned through Kernel.spawn, options {max_tokens: N, temperature: 0,
          ignore_eos: true}
  door    16 host programs (separate Python processes, the openai SDK) attached to the door the way the shell attaches
          them (Door.attach: a host process, its token, OPENAI_BASE_URL), each sending the same prompt as one
          streamed chat completion with max_tokens N, temperature 0 and ignore_eos. The programs import the SDK and
          connect first, then wait for a go file, so interpreter start-up is not timed; their SSE parsing runs on the
          same cores as the engine and is part of what is measured.
Throughput of a configuration = all generated tokens / (last LLM call finished − first LLM call queued), from the
kernel's own syscall records of the agents (or host processes); every call must have made exactly N tokens.
The target is door tok/s ≥ 0.9 × kernel tok/s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from _common import USER_PROMPTS, emit, loadavg, log, rnd, setup_info, version  # noqa: E402
from aiosh.kernel.config import load_config  # noqa: E402
from aiosh.kernel.kernel import Kernel  # noqa: E402
from aiosh.kernel.streams import Pipe  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 600
TARGET = 0.9

CLIENT = r'''
import os, sys, time
from openai import OpenAI
prompt, tokens, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
client = OpenAI(max_retries=0)
client.models.list()  # connected and authorised before the clock starts
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.005)
stream = client.chat.completions.create(model="local", messages=[{"role": "user", "content": prompt}],
                                        max_tokens=tokens, temperature=0, stream=True,
                                        stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
got = 0
for ev in stream:
    if ev.usage is not None:
        got = ev.usage.completion_tokens
print(f"tokens {got}", flush=True)
'''


class BenchError(Exception):
    """A run whose figures would be wrong (a call failed, or made the wrong number of tokens)."""


class Bench:
    def __init__(self, slots: int, threads: int) -> None:
        self.kernel = Kernel(load_config(cwd=ROOT, overrides={
            "kernel": {"slots": slots}, "model": {"n_threads": threads}, "storage": {"enabled": False},
        }))
        self.lock = threading.Lock()
        self.exited: dict[int, list] = {}
        self.kernel.add_listener(self._on_event)

    def _on_event(self, pid: int, kind: str, status: int | None) -> None:
        if kind == "exited":  # on the kernel loop, before anyone collects the process
            try:
                recs = self.kernel.syscalls(pid)
            except Exception:  # noqa: BLE001
                recs = []
            with self.lock:
                self.exited[pid] = [status, recs]

    def _wait_exited(self, pids: list[int]) -> dict[int, list]:
        deadline = time.monotonic() + WAIT_S
        while True:
            with self.lock:
                if all(p in self.exited for p in pids):
                    return {p: self.exited.pop(p) for p in pids}
            if time.monotonic() > deadline:
                raise BenchError(f"processes still running after {WAIT_S}s")
            time.sleep(0.01)

    def figures(self, name: str, ended: dict[int, list], tokens: int) -> dict:
        calls = []
        for pid, (status, recs) in ended.items():
            llm = [r for r in recs if r.kind == "llm"]
            if status != 0 or len(llm) != 1 or llm[0].outcome != "ok" or llm[0].tokens_out != tokens:
                raise BenchError(f"{name}: pid {pid} status {status}, llm calls {llm}")
            calls.append(llm[0])
        t0 = min(r.t_queued for r in calls)
        t1 = max(r.t_finished for r in calls)
        out = sum(r.tokens_out for r in calls)
        return {"wall_s": t1 - t0, "tok_s": out / (t1 - t0), "tokens_out": out,
                "tokens_in": sum(r.tokens_in for r in calls),
                "ttft_mean_s": sum(r.t_first - r.t_queued for r in calls) / len(calls)}

    def run_kernel(self, n: int, tokens: int) -> dict:
        k = self.kernel
        k.local.clear_idle_caches()
        opts = {"max_tokens": tokens, "temperature": 0, "ignore_eos": True}
        pids = [k.spawn("chat", [USER_PROMPTS[i % len(USER_PROMPTS)]], stdout=Pipe(f"out{i}"), options=opts)
                for i in range(n)]
        ended = self._wait_exited(pids)
        for p in pids:
            k.wait(p, timeout=10)
        return self.figures("kernel", ended, tokens)

    def run_door(self, n: int, tokens: int) -> dict:
        k = self.kernel
        k.local.clear_idle_caches()
        work = Path(tempfile.mkdtemp(prefix="aiosh-bench-door-"))
        go = work / "go"
        script = work / "client.py"
        script.write_text(CLIENT)
        procs: list[tuple[int, subprocess.Popen]] = []
        try:
            for i in range(n):
                att = k.door.attach([sys.executable, str(script)], cwd=str(work))
                env = {**os.environ, **att.env, "NO_PROXY": "127.0.0.1,localhost"}
                popen = subprocess.Popen([sys.executable, str(script), USER_PROMPTS[i % len(USER_PROMPTS)],
                                          str(tokens), str(go)], env=env, stdout=subprocess.PIPE, text=True)
                procs.append((att.pid, popen))
            for _pid, popen in procs:  # every program has imported the SDK and connected
                line = popen.stdout.readline()  # type: ignore[union-attr]
                if line.strip() != "ready":
                    raise BenchError(f"door: a client did not start ({line!r})")
            go.write_text("")
            ended = {}
            for pid, popen in procs:
                rest = popen.stdout.read()  # type: ignore[union-attr]
                status = popen.wait(WAIT_S)
                if status != 0 or f"tokens {tokens}" not in rest:
                    raise BenchError(f"door: client ended with {status}: {rest!r}")
                # A host process is collected as soon as it ends (the shell waits for the program, not for it):
                # read its records while it lives, once its program is done.
                ended[pid] = [status, k.syscalls(pid)]
                k.door.detach(pid, status)
            self._wait_exited([pid for pid, _ in procs])
        finally:
            for _pid, popen in procs:
                if popen.poll() is None:
                    popen.kill()
        return self.figures("door", ended, tokens)

    def close(self) -> None:
        self.kernel.shutdown()


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 x 8 tokens, 1 round (figures meaningless)")
    ap.add_argument("--programs", type=int, default=0, help="agents / host programs (default 16, 4 with --quick)")
    ap.add_argument("--tokens", type=int, default=0, help="tokens per reply (default 32, 8 with --quick)")
    ap.add_argument("--rounds", type=int, default=0, help="rounds, alternating the order (default 2, 1 with --quick)")
    ap.add_argument("--threads", type=int, default=0, help="llama.cpp threads (default: all cores)")
    args = ap.parse_args(argv)
    n = args.programs or (4 if args.quick else 16)
    tokens = args.tokens or (8 if args.quick else 32)
    rounds = args.rounds or (1 if args.quick else 2)
    log(f"load {loadavg():.2f}; starting one kernel with {n} slots")
    bench = Bench(slots=n, threads=args.threads)
    try:
        bench.run_kernel(min(n, 2), 4)  # warm-up: the first call compiles the chat template and fills caches
        bench.run_door(min(n, 2), 4)
        runs: dict[str, list[dict]] = {"kernel": [], "door": []}
        orders = []
        for r in range(rounds):
            order = ["kernel", "door"] if r % 2 == 0 else ["door", "kernel"]
            orders.append(order)
            for name in order:
                got = bench.run_kernel(n, tokens) if name == "kernel" else bench.run_door(n, tokens)
                runs[name].append(got)
                log(f"round {r + 1} {name}: {got['tokens_out']} tokens in {got['wall_s']:.2f}s = "
                    f"{got['tok_s']:.1f} tok/s, ttft mean {got['ttft_mean_s']:.2f}s")
        result: dict = {}
        for name, rs in runs.items():
            result[name] = {
                "tok_s": rnd(mean([r["tok_s"] for r in rs]), 1),
                "wall_s": rnd(mean([r["wall_s"] for r in rs])),
                "ttft_mean_s": rnd(mean([r["ttft_mean_s"] for r in rs])),
                "tokens_out_per_run": rs[0]["tokens_out"], "tokens_in_per_run": rs[0]["tokens_in"],
                "tok_s_runs": [rnd(r["tok_s"], 1) for r in rs],
            }
        ratio = result["door"]["tok_s"] / result["kernel"]["tok_s"]
        result["door_vs_kernel_tok_s"] = rnd(ratio, 3)
        result["target"] = TARGET
        result["meets_target"] = ratio >= TARGET
        result["setup"] = setup_info(
            bench.kernel.model, bench.kernel.local.n_threads, quick=args.quick, programs=n, tokens_each=tokens,
            rounds=rounds, orders=orders, slots=n, policy=bench.kernel.config.scheduler.policy,
            request="one streamed chat completion, the prompt as one user message, max_tokens N, temperature 0, "
            "ignore_eos, stream_options.include_usage", openai_version=version("openai"),
            uvicorn_version=version("uvicorn"), starlette_version=version("starlette"),
        )
        emit(result)
        return 0
    except BenchError as exc:
        log(f"ABORTED: {exc}")
        return 1
    finally:
        bench.close()


if __name__ == "__main__":
    sys.exit(main())
