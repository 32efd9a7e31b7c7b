"""What guard() costs over the raw HTTP call it makes.

Runs a local HTTP server that answers every decisions.evaluate with
allow, then times N raw POSTs (urllib, the same body) and N guard() calls,
interleaved in one run, and prints p50/p99 of each and their difference.
The server is the same for both, so the difference is the SDK's own work
(building the action, idempotency key, retry/breaker bookkeeping, decoding).

    python3 sdk/python/bench/guard_overhead.py [N]
"""

import json
import os
import sys
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
from vigil import Vigil  # noqa: E402

ANSWER = json.dumps({"decision": "allow", "decisionId": "dec-1", "reasonCodes": [], "requiresDeskApproval": False,
                     "packHash": "sha256:" + "0" * 64, "matches": [], "evaluatedAt": "2026-01-01T00:00:00Z"}).encode()


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(ANSWER)))
        self.end_headers()
        self.wfile.write(ANSWER)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}"
    c = Vigil(url, "key", agent_id="bench-agent", session_id="bench")
    args = {"to": "acct-1", "amount": 50}

    def raw():
        body = json.dumps({"agentId": "bench-agent", "sessionId": "bench", "context": {},
                           "action": {"kind": "tool_call", "tool": "sdk_refund", "arguments": args}}).encode()
        req = urllib.request.Request(url + "/v1/decisions.evaluate", data=body, method="POST",
                                     headers={"Authorization": "Bearer key", "Content-Type": "application/json", "Idempotency-Key": str(uuid.uuid4())})
        with urllib.request.urlopen(req, timeout=10) as res:
            json.loads(res.read())

    def guard():
        c.guard("sdk_refund", arguments=args)

    for f in (raw, guard):
        for _ in range(100):
            f()
    t_raw, t_guard = [], []
    for _ in range(n):
        for f, out in ((raw, t_raw), (guard, t_guard)):
            t0 = time.perf_counter()
            f()
            out.append((time.perf_counter() - t0) * 1e6)
    c.close()
    srv.shutdown()
    for name, xs in (("raw urllib POST", t_raw), ("guard()", t_guard)):
        print(f"{name:16s} p50 {pct(xs, 50):7.0f} µs  p99 {pct(xs, 99):7.0f} µs")
    print(f"{'overhead':16s} p50 {pct(t_guard, 50) - pct(t_raw, 50):7.0f} µs  p99 {pct(t_guard, 99) - pct(t_raw, 99):7.0f} µs"
          f"  (ratio p50 {pct(t_guard, 50) / pct(t_raw, 50):.2f}×)   n={n} each, interleaved")


if __name__ == "__main__":
    main()
