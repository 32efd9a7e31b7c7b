// The shared SDK scenarios (sdk/conformance/scenarios.json) against a real
// Vigil. The Go harness (sdk/conformance, see its README) starts Vigil, a
// fault proxy and an approver, then runs this file with VIGIL_* variables
// set. Without them the scenarios are skipped and only the unit tests run.
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { test } from "node:test";
import { ActionBlocked, ApprovalMismatch, ApprovalRejected, ApprovalTimeout, CircuitOpen, Vigil, VigilError, VigilUnavailable } from "../dist/index.js";

const env = process.env;
const CONTROL = env.VIGIL_CONFORMANCE_CONTROL ?? "";
const FILE = env.VIGIL_CONFORMANCE_SCENARIOS || new URL("../../conformance/scenarios.json", import.meta.url).pathname;
const scenarios = CONTROL && existsSync(FILE) ? JSON.parse(readFileSync(FILE, "utf8")).scenarios : [];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function control(method, path, body) {
  const res = await fetch(CONTROL.replace(/\/+$/, "") + path, { method, headers: { "content-type": "application/json" }, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  assert.ok(res.ok, `control ${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : undefined;
}

function makeClient(o, sessionId) {
  const opts = { baseUrl: env.VIGIL_URL, apiKey: env.VIGIL_API_KEY, agentId: env.VIGIL_AGENT_ID, sessionId };
  if ("batchSize" in o) opts.batchSize = o.batchSize;
  if ("lingerMs" in o) opts.lingerMs = o.lingerMs;
  if ("maxRetries" in o) opts.maxRetries = o.maxRetries;
  if ("backoffMs" in o) opts.backoffBaseMs = o.backoffMs;
  if ("approvalTimeoutMs" in o) opts.approvalTimeoutMs = o.approvalTimeoutMs;
  if (o.breaker) {
    opts.breakerThreshold = o.breaker.failures;
    opts.breakerCooldownMs = o.breaker.cooldownMs;
  }
  return new Vigil(opts);
}

function errorName(e) {
  // Most specific first: the classes nest.
  for (const [cls, name] of [[ApprovalMismatch, "arguments_mismatch"], [ApprovalRejected, "approval_rejected"], [ApprovalTimeout, "approval_timeout"],
    [ActionBlocked, "blocked"], [CircuitOpen, "breaker_open"], [VigilUnavailable, "unavailable"]]) {
    if (e instanceof cls) return name;
  }
  return e?.name ?? String(e);
}

async function playGuard(c, step) {
  const act = step.action;
  const action = { kind: "tool_call", tool: act.tool };
  const failOpen = { fail_open: true, fail_closed: false }[step.onBreakerOpen ?? ""];
  const o = { arguments: act.arguments, context: act.context, failOpen };
  let got;
  try {
    let d;
    if ("runArguments" in step) d = await c.redeem(await c.ask(action, o), step.runArguments);
    else d = await c.guard(action, o);
    got = { proceed: true, outcome: d.outcome, reasonCodes: d.reasonCodes, failedOpen: d.failedOpen };
  } catch (e) {
    if (!(e instanceof VigilError)) throw e;
    got = { proceed: false, error: errorName(e), outcome: e.decision?.decision ?? "", reasonCodes: e.reasonCodes ?? [] };
  }
  for (const [k, v] of Object.entries(step.expect ?? {})) assert.deepEqual(got[k], v, `guard ${act.tool}: ${k} (got ${JSON.stringify(got)})`);
}

const match = (pattern, path) => {
  const p = pattern.split("/"), q = path.split("?")[0].split("/");
  return p.length === q.length && p.every((a, i) => a === "*" || a === q[i]);
};

async function expectRequests(step) {
  const deadline = Date.now() + 10_000;
  let log, sel;
  for (;;) {
    log = await control("GET", "/requests");
    sel = log.requests.filter((r) => (!step.method || r.method === step.method) && (!step.path || match(step.path, r.path)));
    if ((sel.length === step.count && (!("refused" in step) || log.refused === step.refused)) || Date.now() > deadline) break;
    await sleep(50);
  }
  const ctx = JSON.stringify(sel);
  assert.equal(sel.length, step.count, `${step.method} ${step.path}: ${ctx}`);
  if ("refused" in step) assert.equal(log.refused, step.refused, "refused connections");
  const keys = sel.map((r) => r.idempotencyKey ?? "");
  if ("items" in step) assert.equal(sel.reduce((n, r) => n + (r.items ?? 0), 0), step.items, ctx);
  if ("faulted" in step) assert.equal(sel.filter((r) => r.faulted).length, step.faulted, ctx);
  if (step.allHaveIdempotencyKey) assert.ok(keys.every(Boolean), ctx);
  if (step.sameIdempotencyKey) assert.ok(keys.length > 0 && keys.every(Boolean) && new Set(keys).size === 1, ctx);
  if (step.distinctIdempotencyKeys) assert.equal(new Set(keys).size, keys.length, ctx);
  if (step.sameDecisionId) assert.equal(new Set(sel.map((r) => r.decisionId).filter(Boolean)).size, 1, ctx);
}

async function expectEvents(session, count) {
  const deadline = Date.now() + 15_000;
  let n = -1;
  while (Date.now() < deadline) {
    n = (await control("GET", `/events?sessionId=${encodeURIComponent(session)}`)).count;
    assert.ok(n <= count, `${n} events stored, want ${count}`);
    if (n === count) return;
    await sleep(100);
  }
  assert.fail(`${n} events stored, want ${count}`);
}

for (const sc of scenarios) {
  test(`conformance: ${sc.id}`, async () => {
    await control("POST", "/reset");
    const session = `${env.VIGIL_CONFORMANCE_RUN}.${sc.id}`;
    const c = makeClient(sc.client ?? {}, session);
    try {
      for (const step of sc.steps) {
        switch (step.op) {
          case "report":
            for (let i = 0; i < (step.count ?? 1); i++) assert.ok(c.report({ ...step.event }));
            break;
          case "flush":
            assert.ok(await c.flush(30_000), "flush did not finish");
            break;
          case "close":
            assert.ok(await c.close(30_000), "close did not flush everything");
            break;
          case "guard":
            await playGuard(c, step);
            break;
          case "fault": {
            const { op, ...body } = step;
            await control("POST", "/faults", body);
            break;
          }
          case "down":
          case "up":
            await control("POST", `/${step.op}`);
            break;
          case "sleep":
            await sleep(step.ms);
            break;
          case "expectRequests":
            await expectRequests(step);
            break;
          case "expectEvents":
            await expectEvents(session, step.count);
            break;
          default:
            assert.fail(`unknown op ${step.op}`);
        }
      }
    } finally {
      await c.close(5_000);
    }
  });
}

test("conformance scenarios need the Go harness", { skip: CONTROL ? false : "VIGIL_CONFORMANCE_CONTROL not set: run through sdk/conformance" }, () => {
  assert.ok(scenarios.length > 0, `no scenarios in ${FILE}`);
});
