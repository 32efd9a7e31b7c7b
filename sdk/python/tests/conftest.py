"""A scripted local HTTP server standing in for Vigil in the unit tests.

The unit tests check the SDK's own machinery (retries, breaker, batching,
the approval flow) against answers they choose; the shared conformance
scenarios (test_conformance.py) run the same SDK against a real Vigil.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

Answer = Tuple[int, Dict[str, str], Any]


class Scripted:
    """Answers each route from a script: a list of answers consumed in order
    (the last one repeats), or a function of the request."""

    def __init__(self) -> None:
        self.routes: Dict[Tuple[str, str], Any] = {}
        self.requests: List[Dict[str, Any]] = []
        self.lock = threading.RLock()

    def on(self, method: str, path: str, *answers: Any) -> None:
        self.routes[(method, path)] = list(answers) if not (len(answers) == 1 and callable(answers[0])) else answers[0]

    def answer(self, method: str, path: str, req: Dict[str, Any]) -> Answer:
        with self.lock:
            self.requests.append(req)
            script = self.routes.get((method, path.split("?")[0]))
            if script is None:
                return 404, {}, {"error": {"code": "NOT_FOUND", "message": "no route"}, "code": "not_found", "message": "no route"}
            a = script if callable(script) else (script.pop(0) if len(script) > 1 else script[0])
            return a(req) if callable(a) else a

    def calls(self, path: str) -> List[Dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["path"].split("?")[0] == path]


def err(status: int, code: str, message: str = "x", details: Optional[list] = None, retry_after: Optional[str] = None) -> Answer:
    h = {"Retry-After": retry_after} if retry_after is not None else {}
    return status, h, {"error": {"code": code, "message": message, "details": details or []}, "code": code.lower(), "message": message, "requestId": "r-1"}


@pytest.fixture
def server():
    script = Scripted()

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a: Any) -> None:
            pass

        def _do(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n) if n else b""
            req = {"method": self.command, "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                   "body": json.loads(raw) if raw else None}
            status, headers, body = script.answer(self.command, self.path, req)
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _do

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    t.start()
    script.url = f"http://127.0.0.1:{srv.server_address[1]}"  # type: ignore[attr-defined]
    yield script
    srv.shutdown()
    srv.server_close()


class Sleeps(list):
    """Records the SDK's back-off sleeps instead of sleeping."""

    def __call__(self, s: float) -> None:
        self.append(s)


@pytest.fixture
def client(server):
    from vigil import Vigil

    made = []

    def make(**kw: Any):
        opts: Dict[str, Any] = dict(agent_id="bot-1", session_id="s-1", linger=60.0)
        opts.update(kw)
        c = Vigil(server.url, "key-1", **opts)
        c._http.sleep = Sleeps()
        made.append(c)
        return c

    yield make
    for c in made:
        c.close(timeout=1)


def eventually(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.01)
    assert cond(), "condition not met in time"
