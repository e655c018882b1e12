"""A JSON-RPC relay in front of a real chain node that answers chosen methods with an error a set number of times:
a flaky node, for the dashboard's tests (every other request is the real node's answer)."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FlakyRelay:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.failures: dict[str, int] = {}  # method -> how many more times it fails
        self.failed: list[str] = []  # the methods that were answered with an error
        self.delay_s = 0.0  # every answer is this late (a slow node)
        self.logs_answered: list[int] = []  # how many logs each eth_getLogs answer held
        self._lock = threading.Lock()

    def fail(self, method: str, times: int = 1) -> None:
        with self._lock:
            self.failures[method] = times

    def _should_fail(self, method: str) -> bool:
        with self._lock:
            left = self.failures.get(method, 0)
            if left <= 0:
                return False
            self.failures[method] = left - 1
            self.failed.append(method)
            return True

    def answer(self, body: bytes) -> bytes:
        time.sleep(self.delay_s)
        request = json.loads(body)
        if isinstance(request, dict) and self._should_fail(str(request.get("method"))):
            error = {"code": -32000, "message": "flaky node: try again"}
            return json.dumps({"jsonrpc": "2.0", "id": request.get("id"), "error": error}).encode()
        upstream = urllib.request.Request(self.upstream, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(upstream, timeout=30) as resp:
            reply = bytes(resp.read())
        if isinstance(request, dict) and request.get("method") == "eth_getLogs":
            self.logs_answered.append(len(json.loads(reply).get("result") or []))
        return reply


@contextmanager
def flaky_relay(upstream: str) -> Iterator[tuple[FlakyRelay, str]]:
    """(the relay, its URL), serving until the block ends."""
    relay = FlakyRelay(upstream)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            reply = relay.answer(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield relay, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
