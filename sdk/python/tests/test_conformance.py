"""The shared SDK scenarios (sdk/conformance/scenarios.json) against a real Vigil.

The Go harness (sdk/conformance, see its README) starts Vigil, a fault
proxy and an approver, then runs this file with VIGIL_* variables set.
Without them the scenarios are skipped and only the unit tests run.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from typing import Any, Dict, List, Optional

import pytest

from vigil import ActionBlocked, ApprovalMismatch, ApprovalRejected, ApprovalTimeout, CircuitOpen, Vigil, VigilError, VigilUnavailable

CONTROL = os.environ.get("VIGIL_CONFORMANCE_CONTROL", "")
FILE = os.environ.get("VIGIL_CONFORMANCE_SCENARIOS") or os.path.join(os.path.dirname(__file__), "..", "..", "conformance", "scenarios.json")


def _scenarios() -> List[Dict[str, Any]]:
    if not CONTROL or not os.path.exists(FILE):
        return []
    with open(FILE, encoding="utf-8") as f:
        return list(json.load(f)["scenarios"])


pytestmark = pytest.mark.skipif(not CONTROL, reason="VIGIL_CONFORMANCE_CONTROL not set: run through the Go harness in sdk/conformance")


def control(method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(CONTROL.rstrip("/") + path, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as res:
        raw = res.read()
        return json.loads(raw) if raw else None


def make_client(opts: Dict[str, Any], session: str) -> Vigil:
    kw: Dict[str, Any] = {}
    if "batchSize" in opts:
        kw["batch_size"] = opts["batchSize"]
    if "lingerMs" in opts:
        kw["linger"] = opts["lingerMs"] / 1000
    if "maxRetries" in opts:
        kw["max_retries"] = opts["maxRetries"]
    if "backoffMs" in opts:
        kw["backoff_base"] = opts["backoffMs"] / 1000
    if "approvalTimeoutMs" in opts:
        kw["approval_timeout"] = opts["approvalTimeoutMs"] / 1000
    if "breaker" in opts:
        kw["breaker_threshold"] = opts["breaker"]["failures"]
        kw["breaker_cooldown"] = opts["breaker"]["cooldownMs"] / 1000
    return Vigil(os.environ["VIGIL_URL"], os.environ["VIGIL_API_KEY"], agent_id=os.environ["VIGIL_AGENT_ID"], session_id=session, **kw)


def error_name(e: BaseException) -> str:
    # Most specific first: the classes nest.
    for cls, name in ((ApprovalMismatch, "arguments_mismatch"), (ApprovalRejected, "approval_rejected"), (ApprovalTimeout, "approval_timeout"),
                      (ActionBlocked, "blocked"), (CircuitOpen, "breaker_open"), (VigilUnavailable, "unavailable")):
        if isinstance(e, cls):
            return name
    return type(e).__name__


def play_guard(c: Vigil, step: Dict[str, Any]) -> None:
    act = step["action"]
    action = {"kind": "tool_call", "tool": act["tool"]}
    args = act.get("arguments")
    fail_open = {"fail_open": True, "fail_closed": False}.get(step.get("onBreakerOpen", ""), None)
    want = step.get("expect", {})
    got: Dict[str, Any] = {}
    try:
        if "runArguments" in step:
            d = c.ask(action, arguments=args, context=act.get("context"), fail_open=fail_open)
            d = c.redeem(d, step["runArguments"])
        else:
            d = c.guard(action, arguments=args, context=act.get("context"), fail_open=fail_open)
        got = {"proceed": True, "outcome": d.outcome, "reasonCodes": d.reason_codes, "failedOpen": d.failed_open}
    except VigilError as e:
        dec = getattr(e, "decision", {}) or {}
        got = {"proceed": False, "error": error_name(e), "outcome": dec.get("decision", ""), "reasonCodes": list(getattr(e, "reason_codes", []))}
    for k, v in want.items():
        assert got.get(k) == v, f"guard {act['tool']}: {k} is {got.get(k)!r}, want {v!r} (got {got})"


def _match(pattern: str, path: str) -> bool:
    p, q = pattern.split("/"), path.split("?")[0].split("/")
    return len(p) == len(q) and all(a == "*" or a == b for a, b in zip(p, q))


def expect_requests(step: Dict[str, Any]) -> None:
    deadline = time.monotonic() + 10
    while True:
        log = control("GET", "/requests")
        sel = [r for r in log["requests"] if (not step.get("method") or r["method"] == step["method"]) and (not step.get("path") or _match(step["path"], r["path"]))]
        ok = len(sel) == step["count"] and ("refused" not in step or log["refused"] == step["refused"])
        if ok or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(sel) == step["count"], f"{step.get('method')} {step.get('path')}: {len(sel)} requests, want {step['count']}: {sel}"
    if "refused" in step:
        assert log["refused"] == step["refused"], f"refused {log['refused']}, want {step['refused']}"
    keys = [r.get("idempotencyKey") or "" for r in sel]
    if "items" in step:
        assert sum(r.get("items") or 0 for r in sel) == step["items"], sel
    if "faulted" in step:
        assert sum(1 for r in sel if r.get("faulted")) == step["faulted"], sel
    if step.get("allHaveIdempotencyKey"):
        assert all(keys), sel
    if step.get("sameIdempotencyKey"):
        assert keys and all(keys) and len(set(keys)) == 1, sel
    if step.get("distinctIdempotencyKeys"):
        assert len(set(keys)) == len(keys), sel
    if step.get("sameDecisionId"):
        ids = {r["decisionId"] for r in sel if r.get("decisionId")}
        assert len(ids) == 1, sel


def expect_events(session: str, count: int) -> None:
    deadline = time.monotonic() + 15
    n = -1
    while time.monotonic() < deadline:
        n = control("GET", "/events?sessionId=" + urllib.request.quote(session))["count"]
        assert n <= count, f"{n} events stored, want {count}"
        if n == count:
            return
        time.sleep(0.1)
    pytest.fail(f"{n} events stored, want {count}")


@pytest.mark.parametrize("scenario", [pytest.param(s, id=s["id"]) for s in _scenarios()])
def test_scenario(scenario: Dict[str, Any]) -> None:
    control("POST", "/reset")
    session = f"{os.environ['VIGIL_CONFORMANCE_RUN']}.{scenario['id']}"
    c = make_client(scenario.get("client", {}), session)
    try:
        for i, step in enumerate(scenario["steps"]):
            op = step["op"]
            if op == "report":
                for _ in range(step.get("count", 1)):
                    assert c.report(dict(step["event"]))
            elif op == "flush":
                assert c.flush(timeout=30), "flush did not finish"
            elif op == "close":
                assert c.close(timeout=30), "close did not flush everything"
            elif op == "guard":
                play_guard(c, step)
            elif op == "fault":
                control("POST", "/faults", {k: v for k, v in step.items() if k != "op"})
            elif op in ("down", "up"):
                control("POST", "/" + op)
            elif op == "sleep":
                time.sleep(step["ms"] / 1000)
            elif op == "expectRequests":
                expect_requests(step)
            elif op == "expectEvents":
                expect_events(session, step["count"])
            else:
                pytest.fail(f"step {i}: unknown op {op!r}")
    finally:
        c.close(timeout=5)
