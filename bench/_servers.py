"""OpenAI-compatible servers on loopback for the benches: `python -m llama_cpp.server` on the embedded model.

The tests start their servers with this too (tests/servers.py). Request interruption is off: with it on,
llama-cpp-python's server ends the stream in flight (with [DONE] and no finish reason) when a new request comes.
The server runs one request at a time (a lock around its single `Llama`), so a [backends.NAME] entry for it gets
`max_concurrent = 1`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from aiosh.kernel.model import find_embedded_model

ALIAS = "smollm2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """One `llama_cpp.server` process (its own session, so that stop() reaches any child it forks)."""

    def __init__(self, log_dir: Path, name: str, n_threads: int = 1, n_ctx: int = 2048) -> None:
        self.name = name
        self.n_threads = n_threads
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log = Path(log_dir) / f"{name}.log"
        self.cmd = [
            sys.executable, str(Path(__file__).with_name("_safe_llama.py")), "--model", str(find_embedded_model()),
            "--model_alias", ALIAS, "--host", "127.0.0.1", "--port", str(self.port),
            "--interrupt_requests", "False", "--n_ctx", str(n_ctx), "--n_threads", str(n_threads),
            "--n_threads_batch", str(n_threads), "--verbose", "False",
        ]
        with open(self.log, "wb") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})  # its log, as it happens

    def wait_ready(self, timeout: float = 120) -> LlamaServer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: llama_cpp.server exited {self.proc.returncode}: {self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"{self.name}: llama_cpp.server not ready after {timeout}s: {self.tail()}")

    def tail(self, n: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def cpu_s(self) -> float:
        """CPU time (user + system, all threads) the server process has used so far; 0.0 once it is gone."""
        try:
            with open(f"/proc/{self.proc.pid}/stat", encoding="ascii") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime

    def kill(self) -> None:
        """SIGKILL: the server dies mid-stream, as a crashed replica does."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM to its process group, SIGKILL after 10 s."""
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        except ProcessLookupError:
            pass
