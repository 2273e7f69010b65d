"""OpenAI-compatible servers on loopback for the remote-backend tests: `python -m llama_cpp.server` on the
embedded model (the launcher the benches use), and a scripted server that misbehaves on purpose (for faults a
healthy server never shows)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bench._servers import ALIAS, LlamaServer, free_port

__all__ = ["ALIAS", "LlamaServer", "ScriptedServer", "free_port"]


Behaviour = Callable[[BaseHTTPRequestHandler, dict], None]


class ScriptedServer:
    """An OpenAI-compatible server in this process whose answer to each request is a function of the test's:
    a clean stream, a 503, malformed JSON, a stream cut off without a finish reason, a stall."""

    def __init__(self, behaviour: Behaviour, models: list[str] | None = None) -> None:
        self.behaviour = behaviour
        self.models = models or [ALIAS]
        self.requests: list[dict] = []
        self.health_ok = True
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                if self.path.rstrip("/").endswith("/models") and outer.health_ok:
                    body = json.dumps({"object": "list", "data": [
                        {"id": m, "object": "model", "owned_by": "test"} for m in outer.models]}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                else:
                    send_error(self, 503, "unhealthy")

            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(n) or b"{}")
                outer.requests.append(body)
                outer.behaviour(self, body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def send_error(h: BaseHTTPRequestHandler, code: int, message: str) -> None:
    body = json.dumps({"error": {"message": message, "type": "server_error"}}).encode()
    h.send_response(code)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def start_events(h: BaseHTTPRequestHandler) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "text/event-stream")
    h.send_header("Connection", "close")
    h.end_headers()
    h.close_connection = True


def send_event(h: BaseHTTPRequestHandler, data: str) -> None:
    h.wfile.write(f"data: {data}\n\n".encode())
    h.wfile.flush()


def chunk(text: str | None = None, finish: str | None = None) -> str:
    return json.dumps({
        "id": "c1", "object": "chat.completion.chunk", "created": 0, "model": ALIAS,
        "choices": [{"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}],
    })


def stream_words(words: list[str], *, finish: str | None = "stop", done: bool = True,
                 delay: float = 0.0) -> Behaviour:
    """A behaviour: stream these words a chunk each, then a finish reason (None: none) and [DONE] (or not)."""

    def run(h: BaseHTTPRequestHandler, body: dict) -> None:
        start_events(h)
        for w in words:
            send_event(h, chunk(w))
            if delay:
                time.sleep(delay)
        if finish:
            send_event(h, chunk(finish=finish))
        if done:
            send_event(h, "[DONE]")

    return run
