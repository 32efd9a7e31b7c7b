"""guard(): allow/warn proceed, block raises, require_approval waits, redeems."""

import asyncio

import pytest

from conftest import err
from vigil import ActionBlocked, ApprovalMismatch, ApprovalRejected, ApprovalTimeout, arguments_digest

ARGS = {"order": "o-1", "amount": 1250}


def decided(outcome, codes=()):
    return 200, {}, {"decision": outcome, "decisionId": "dec-1", "reasonCodes": list(codes)}


def poll(final, outcome=None, digest=None):
    body = {"decisionId": "dec-1", "decision": "require_approval", "final": final,
            "approval": {"argumentsDigest": digest or arguments_digest(ARGS)},
            "approvalProgress": {"required": 1, "received": 1 if final else 0, "approvedBy": ["member:bob@example.com"] if outcome == "approved" else []}}
    if final:
        body["outcome"] = outcome
    return 200, {}, body


@pytest.mark.parametrize("outcome", ["allow", "warn"])
def test_allow_and_warn_proceed(server, client, outcome):
    server.on("POST", "/v1/decisions.evaluate", decided(outcome, ["UNDECLARED_TOOL"] if outcome == "warn" else []))
    d = client().guard("search", arguments={"q": "x"}, context={"user": "u"})
    assert (d.outcome, d.decision_id) == (outcome, "dec-1")
    (r,) = server.calls("/v1/decisions.evaluate")
    assert r["body"] == {"agentId": "bot-1", "sessionId": "s-1", "context": {"user": "u"},
                         "action": {"kind": "tool_call", "tool": "search", "arguments": {"q": "x"}}}


def test_block_raises_with_reason_codes(server, client):
    server.on("POST", "/v1/decisions.evaluate", decided("block", ["AMOUNT_FAR_OVER_THRESHOLD", "AMOUNT_OVER_THRESHOLD"]))
    with pytest.raises(ActionBlocked) as e:
        client().guard("execute_refund", arguments=ARGS)
    assert e.value.reason_codes == ["AMOUNT_FAR_OVER_THRESHOLD", "AMOUNT_OVER_THRESHOLD"]
    assert e.value.decision_id == "dec-1" and e.value.outcome == "block"


def test_approval_waits_then_redeems_these_arguments(server, client):
    server.on("POST", "/v1/decisions.evaluate", decided("require_approval", ["AMOUNT_OVER_THRESHOLD"]))
    server.on("GET", "/v1/decisions/dec-1", poll(False), poll(True, "approved"))
    server.on("POST", "/v1/decisions/dec-1/redeem", (200, {}, {"redeemed": True}))
    d = client().guard("execute_refund", arguments=ARGS)
    assert d.approved and d.outcome == "require_approval" and d.approved_by == ["member:bob@example.com"]
    polls = server.calls("/v1/decisions/dec-1")
    assert len(polls) == 2 and all("wait=" in r["path"] for r in polls)
    (r,) = server.calls("/v1/decisions/dec-1/redeem")
    assert r["body"] == {"arguments": ARGS} and r["headers"].get("idempotency-key")


def test_rejected_raises(server, client):
    server.on("POST", "/v1/decisions.evaluate", decided("require_approval"))
    server.on("GET", "/v1/decisions/dec-1", poll(True, "rejected"))
    with pytest.raises(ApprovalRejected):
        client().guard("execute_refund", arguments=ARGS)
    assert not server.calls("/v1/decisions/dec-1/redeem")


def test_approval_for_other_arguments_is_not_run(server, client):
    server.on("POST", "/v1/decisions.evaluate", decided("require_approval"))
    server.on("GET", "/v1/decisions/dec-1", poll(True, "approved", digest=arguments_digest({"amount": 1})))
    with pytest.raises(ApprovalMismatch):
        client().guard("execute_refund", arguments=ARGS)
    assert not server.calls("/v1/decisions/dec-1/redeem")


def test_redeem_refused_is_not_run(server, client):
    server.on("POST", "/v1/decisions.evaluate", decided("require_approval"))
    server.on("GET", "/v1/decisions/dec-1", poll(True, "approved"))
    server.on("POST", "/v1/decisions/dec-1/redeem", err(409, "CONFLICT", "already", [{"path": "decision", "code": "already_redeemed"}]))
    with pytest.raises(ApprovalMismatch) as e:
        client().guard("execute_refund", arguments=ARGS)
    assert "already_redeemed" in str(e.value)


def test_approval_wait_is_bounded(server, client):
    server.on("POST", "/v1/decisions.evaluate", decided("require_approval"))
    server.on("GET", "/v1/decisions/dec-1", poll(False))
    with pytest.raises(ApprovalTimeout):
        client().guard("execute_refund", arguments=ARGS, approval_timeout=0.3)


def test_long_poll_cap_is_waited_out(server, client):
    server.on("POST", "/v1/decisions.evaluate", decided("require_approval"))
    server.on("GET", "/v1/decisions/dec-1", err(429, "RATE_LIMITED", retry_after="5"), poll(True, "approved"))
    server.on("POST", "/v1/decisions/dec-1/redeem", (200, {}, {"redeemed": True}))
    c = client()
    assert c.guard("execute_refund", arguments=ARGS).approved
    assert c._http.sleep and c._http.sleep[0] >= 5


def test_decorator_guards_binds_arguments_and_reports(server, client):
    server.on("POST", "/v1/decisions.evaluate", decided("allow"))
    server.on("POST", "/v1/events/batch", (202, {}, {"results": []}))
    c = client()
    ran = []

    @c.tool
    def execute_refund(order: str, amount: float = 10) -> str:
        ran.append((order, amount))
        return "done"

    assert execute_refund("o-1", amount=5) == "done"
    assert execute_refund.__name__ == "execute_refund"
    assert ran == [("o-1", 5)]
    (r,) = server.calls("/v1/decisions.evaluate")
    assert r["body"]["action"] == {"kind": "tool_call", "tool": "execute_refund", "arguments": {"order": "o-1", "amount": 5}}
    assert c.flush(5)
    (b,) = server.calls("/v1/events/batch")
    p = b["body"]["events"][0]["payload"]
    assert (p["toolName"], p["status"], p["decisionId"], p["argumentsHash"]) == ("execute_refund", "ok", "dec-1", arguments_digest({"order": "o-1", "amount": 5}))


def test_decorator_does_not_run_a_blocked_tool(server, client):
    server.on("POST", "/v1/decisions.evaluate", decided("block", ["NOPE"]))
    c = client()
    ran = []

    @c.tool(name="rm", report=False)
    def remove(path: str) -> None:
        ran.append(path)

    with pytest.raises(ActionBlocked):
        remove("/")
    assert ran == []


def test_async_decorator(server, client):
    server.on("POST", "/v1/decisions.evaluate", decided("allow"))
    c = client()

    @c.tool(report=False)
    async def fetch(url: str) -> str:
        return url.upper()

    assert asyncio.run(fetch("a")) == "A"
    assert server.calls("/v1/decisions.evaluate")[0]["body"]["action"]["tool"] == "fetch"


def test_ask_then_redeem_other_arguments_is_refused(server, client):
    server.on("POST", "/v1/decisions.evaluate", decided("require_approval"))
    server.on("GET", "/v1/decisions/dec-1", poll(True, "approved"))
    server.on("POST", "/v1/decisions/dec-1/redeem", (200, {}, {"redeemed": True}))
    c = client()
    d = c.ask("execute_refund", arguments=ARGS)
    assert d.approved and not d.redeemed and not server.calls("/v1/decisions/dec-1/redeem")
    with pytest.raises(ApprovalMismatch):
        c.redeem(d, {**ARGS, "amount": 5000})
    assert c.redeem(d, ARGS).redeemed
    assert len(server.calls("/v1/decisions/dec-1/redeem")) == 1
    assert c.redeem(d, ARGS).redeemed, "redeeming twice in one process is harmless"
    assert len(server.calls("/v1/decisions/dec-1/redeem")) == 1
