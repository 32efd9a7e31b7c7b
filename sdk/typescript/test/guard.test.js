// guard(): allow/warn proceed, block throws, require_approval waits, redeems.
import assert from "node:assert/strict";
import { afterEach, beforeEach, test } from "node:test";
import { ActionBlocked, ApprovalMismatch, ApprovalRejected, ApprovalTimeout, argumentsDigest } from "../dist/index.js";
import { err, startServer } from "./helpers.js";

const ARGS = { order: "o-1", amount: 1250 };
let s;
beforeEach(async () => (s = await startServer()));
afterEach(async () => s.close());

const decided = (outcome, codes = []) => [200, {}, { decision: outcome, decisionId: "dec-1", reasonCodes: codes }];
async function poll(final, outcome, digest) {
  const body = { decisionId: "dec-1", decision: "require_approval", final, approval: { argumentsDigest: digest ?? (await argumentsDigest(ARGS)) },
    approvalProgress: { required: 1, received: final ? 1 : 0, approvedBy: outcome === "approved" ? ["member:bob@example.com"] : [] } };
  if (final) body.outcome = outcome;
  return [200, {}, body];
}

for (const outcome of ["allow", "warn"]) {
  test(`${outcome} proceeds`, async () => {
    s.on("POST", "/v1/decisions.evaluate", decided(outcome));
    const d = await s.client().guard("search", { arguments: { q: "x" }, context: { user: "u" } });
    assert.equal(d.outcome, outcome);
    assert.equal(d.decisionId, "dec-1");
    const [r] = s.calls("/v1/decisions.evaluate");
    assert.deepEqual(r.body, { agentId: "bot-1", sessionId: "s-1", context: { user: "u" }, action: { kind: "tool_call", tool: "search", arguments: { q: "x" } } });
  });
}

test("block throws with reason codes", async () => {
  s.on("POST", "/v1/decisions.evaluate", decided("block", ["AMOUNT_FAR_OVER_THRESHOLD", "AMOUNT_OVER_THRESHOLD"]));
  await assert.rejects(s.client().guard("execute_refund", { arguments: ARGS }), (e) => {
    assert.ok(e instanceof ActionBlocked);
    assert.deepEqual(e.reasonCodes, ["AMOUNT_FAR_OVER_THRESHOLD", "AMOUNT_OVER_THRESHOLD"]);
    assert.equal(e.decisionId, "dec-1");
    assert.equal(e.outcome, "block");
    return true;
  });
});

test("approval waits, then redeems these arguments", async () => {
  s.on("POST", "/v1/decisions.evaluate", decided("require_approval", ["AMOUNT_OVER_THRESHOLD"]));
  s.on("GET", "/v1/decisions/dec-1", await poll(false), await poll(true, "approved"));
  s.on("POST", "/v1/decisions/dec-1/redeem", [200, {}, { redeemed: true }]);
  const d = await s.client().guard("execute_refund", { arguments: ARGS });
  assert.ok(d.approved);
  assert.equal(d.outcome, "require_approval");
  assert.deepEqual(d.approvedBy, ["member:bob@example.com"]);
  const polls = s.calls("/v1/decisions/dec-1");
  assert.equal(polls.length, 2);
  assert.ok(polls.every((r) => r.path.includes("wait=")));
  const [r] = s.calls("/v1/decisions/dec-1/redeem");
  assert.deepEqual(r.body, { arguments: ARGS });
  assert.ok(r.headers["idempotency-key"]);
});

test("rejected throws", async () => {
  s.on("POST", "/v1/decisions.evaluate", decided("require_approval"));
  s.on("GET", "/v1/decisions/dec-1", await poll(true, "rejected"));
  await assert.rejects(s.client().guard("execute_refund", { arguments: ARGS }), ApprovalRejected);
  assert.equal(s.calls("/v1/decisions/dec-1/redeem").length, 0);
});

test("an approval for other arguments is not run", async () => {
  s.on("POST", "/v1/decisions.evaluate", decided("require_approval"));
  s.on("GET", "/v1/decisions/dec-1", await poll(true, "approved", await argumentsDigest({ amount: 1 })));
  await assert.rejects(s.client().guard("execute_refund", { arguments: ARGS }), ApprovalMismatch);
  assert.equal(s.calls("/v1/decisions/dec-1/redeem").length, 0);
});

test("a refused redemption is not run", async () => {
  s.on("POST", "/v1/decisions.evaluate", decided("require_approval"));
  s.on("GET", "/v1/decisions/dec-1", await poll(true, "approved"));
  s.on("POST", "/v1/decisions/dec-1/redeem", err(409, "CONFLICT", "already", [{ path: "decision", code: "already_redeemed" }]));
  await assert.rejects(s.client().guard("execute_refund", { arguments: ARGS }), (e) => e instanceof ApprovalMismatch && /already_redeemed/.test(e.message));
});

test("the approval wait is bounded", async () => {
  s.on("POST", "/v1/decisions.evaluate", decided("require_approval"));
  s.on("GET", "/v1/decisions/dec-1", await poll(false));
  await assert.rejects(s.client().guard("execute_refund", { arguments: ARGS, approvalTimeoutMs: 300 }), ApprovalTimeout);
});

test("the long-poll cap is waited out", async () => {
  s.on("POST", "/v1/decisions.evaluate", decided("require_approval"));
  s.on("GET", "/v1/decisions/dec-1", err(429, "RATE_LIMITED", "cap", [], "5"), await poll(true, "approved"));
  s.on("POST", "/v1/decisions/dec-1/redeem", [200, {}, { redeemed: true }]);
  const c = s.client();
  assert.ok((await c.guard("execute_refund", { arguments: ARGS })).approved);
  assert.ok(c.sleeps[0] >= 5000);
});

test("tool() guards, passes the arguments and reports", async () => {
  s.on("POST", "/v1/decisions.evaluate", decided("allow"));
  s.on("POST", "/v1/events/batch", [202, {}, { results: [] }]);
  const c = s.client();
  const ran = [];
  const refund = c.tool("execute_refund", async function executeRefund(a) {
    ran.push(a);
    return "done";
  });
  assert.equal(await refund({ order: "o-1", amount: 5 }), "done");
  assert.equal(refund.name, "executeRefund");
  assert.deepEqual(ran, [{ order: "o-1", amount: 5 }]);
  assert.deepEqual(s.calls("/v1/decisions.evaluate")[0].body.action, { kind: "tool_call", tool: "execute_refund", arguments: { order: "o-1", amount: 5 } });
  assert.equal(await c.flush(5000), true);
  const p = s.calls("/v1/events/batch")[0].body.events[0].payload;
  assert.deepEqual([p.toolName, p.status, p.decisionId, p.argumentsHash], ["execute_refund", "ok", "dec-1", await argumentsDigest({ order: "o-1", amount: 5 })]);
});

test("tool() does not run a blocked tool", async () => {
  s.on("POST", "/v1/decisions.evaluate", decided("block", ["NOPE"]));
  const ran = [];
  const rm = s.client().tool("rm", (path) => ran.push(path), { report: false });
  await assert.rejects(rm("/"), ActionBlocked);
  assert.deepEqual(ran, []);
  assert.deepEqual(s.calls("/v1/decisions.evaluate")[0].body.action.arguments, { args: ["/"] });
});

test("ask, then redeem other arguments: refused", async () => {
  s.on("POST", "/v1/decisions.evaluate", decided("require_approval"));
  s.on("GET", "/v1/decisions/dec-1", await poll(true, "approved"));
  s.on("POST", "/v1/decisions/dec-1/redeem", [200, {}, { redeemed: true }]);
  const c = s.client();
  const d = await c.ask("execute_refund", { arguments: ARGS });
  assert.ok(d.approved && !d.redeemed);
  assert.equal(s.calls("/v1/decisions/dec-1/redeem").length, 0);
  await assert.rejects(c.redeem(d, { ...ARGS, amount: 5000 }), ApprovalMismatch);
  assert.ok((await c.redeem(d, ARGS)).redeemed);
  assert.ok((await c.redeem(d, ARGS)).redeemed, "redeeming twice in one process is harmless");
  assert.equal(s.calls("/v1/decisions/dec-1/redeem").length, 1);
});
