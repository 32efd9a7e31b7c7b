// Retries, Retry-After, Idempotency-Key and the circuit breaker.
import assert from "node:assert/strict";
import { afterEach, beforeEach, test } from "node:test";
import { APIError, CircuitBreaker, CircuitOpen, parseRetryAfter, Vigil, VigilUnavailable } from "../dist/index.js";
import { err, startServer } from "./helpers.js";

const ALLOW = [200, {}, { decision: "allow", decisionId: "d-1", reasonCodes: [] }];
let s;
beforeEach(async () => (s = await startServer()));
afterEach(async () => s.close());

for (const status of [429, 502, 503, 504]) {
  test(`retries ${status} then succeeds with one Idempotency-Key`, async () => {
    s.on("POST", "/v1/decisions.evaluate", err(status, "SERVICE_UNAVAILABLE"), err(status, "SERVICE_UNAVAILABLE"), ALLOW);
    const c = s.client();
    assert.equal((await c.guard("search")).outcome, "allow");
    const calls = s.calls("/v1/decisions.evaluate");
    assert.equal(calls.length, 3);
    const keys = new Set(calls.map((r) => r.headers["idempotency-key"]));
    assert.equal(keys.size, 1);
    assert.ok([...keys][0]);
    assert.equal(c.sleeps.length, 2);
  });
}

test("gives up after three retries", async () => {
  s.on("POST", "/v1/decisions.evaluate", err(503, "SERVICE_UNAVAILABLE"));
  await assert.rejects(s.client().guard("search"), VigilUnavailable);
  assert.equal(s.calls("/v1/decisions.evaluate").length, 4);
});

for (const [status, code] of [[400, "VALIDATION_ERROR"], [403, "FORBIDDEN"], [404, "NOT_FOUND"], [409, "CONFLICT"], [500, "INTERNAL_ERROR"]]) {
  test(`does not retry ${status}`, async () => {
    s.on("POST", "/v1/decisions.evaluate", err(status, code, "nope", [{ path: "agentId", code: "required" }]));
    await assert.rejects(s.client().guard("search"), (e) => {
      assert.ok(e instanceof APIError);
      assert.deepEqual([e.status, e.code, e.apiMessage, e.detailCode, e.requestId], [status, code, "nope", "required", "r-1"]);
      return true;
    });
    assert.equal(s.calls("/v1/decisions.evaluate").length, 1);
  });
}

test("honours Retry-After", async () => {
  s.on("POST", "/v1/decisions.evaluate", err(429, "RATE_LIMITED", "slow", [], "7"), ALLOW);
  const c = s.client({ backoffBaseMs: 1 });
  await c.guard("search");
  assert.equal(c.sleeps.length, 1);
  assert.ok(c.sleeps[0] >= 7000 && c.sleeps[0] < 7010, String(c.sleeps[0]));
});

test("backoff is jittered and exponential", () => {
  const c = s.client({ backoffBaseMs: 1000, backoffMaxMs: 100_000 });
  for (let attempt = 0; attempt < 5; attempt++) {
    const ds = Array.from({ length: 200 }, () => c.http.backoff(attempt));
    assert.ok(ds.every((d) => d >= 0 && d <= 1000 * 2 ** attempt));
    assert.ok(new Set(ds).size > 100, "full jitter spreads retries");
  }
  assert.ok(Math.max(...Array.from({ length: 100 }, () => c.http.backoff(20))) <= 100_000);
});

test("parseRetryAfter", () => {
  assert.equal(parseRetryAfter("3"), 3);
  assert.equal(parseRetryAfter("0"), 0);
  assert.equal(parseRetryAfter(""), undefined);
  assert.equal(parseRetryAfter("soon"), undefined);
  assert.equal(parseRetryAfter("Wed, 21 Oct 2015 07:28:00 GMT"), 0);
});

test("every write has an Idempotency-Key", async () => {
  s.on("POST", "/v1/events", [202, {}, { status: "accepted" }]);
  await s.client().reportNow({ category: "tool_api", payload: {} });
  const [r] = s.calls("/v1/events");
  assert.equal(r.headers["idempotency-key"], r.body.eventId);
  assert.equal(r.headers.authorization, "Bearer key-1");
  assert.match(r.headers["x-vigil-sdk"], /^vigil-typescript\//);
});

test("breaker opens, fails fast, fails open per call site, recovers", async () => {
  s.on("POST", "/v1/decisions.evaluate", err(503, "SERVICE_UNAVAILABLE"));
  const c = s.client({ breakerThreshold: 2, breakerCooldownMs: 30_000, maxRetries: 0 });
  let now = 0;
  c.breaker.now = () => now;
  for (let i = 0; i < 2; i++) await assert.rejects(c.guard("search"), VigilUnavailable);
  assert.equal(c.breaker.state, "open");
  await assert.rejects(c.guard("search"), CircuitOpen);
  assert.equal(s.calls("/v1/decisions.evaluate").length, 2, "an open breaker sends nothing");
  const d = await c.guard("search", { failOpen: true });
  assert.ok(d.failedOpen);
  assert.equal(d.outcome, "");
  now = 31_000;
  assert.equal(c.breaker.state, "half-open");
  await assert.rejects(c.guard("search"), VigilUnavailable);
  assert.equal(s.calls("/v1/decisions.evaluate").length, 3);
  await assert.rejects(c.guard("search"), CircuitOpen);
  now = 62_000;
  s.on("POST", "/v1/decisions.evaluate", ALLOW);
  assert.equal((await c.guard("search")).outcome, "allow");
  assert.equal(c.breaker.state, "closed");
});

test("fail open only while the breaker is open", async () => {
  s.on("POST", "/v1/decisions.evaluate", err(503, "SERVICE_UNAVAILABLE"));
  const c = s.client({ failOpen: true, maxRetries: 0, breakerThreshold: 1 });
  await assert.rejects(c.guard("search"), (e) => e instanceof VigilUnavailable && !(e instanceof CircuitOpen));
  assert.ok((await c.guard("search")).failedOpen);
  await assert.rejects(c.guard("delete_db", { failOpen: false }), CircuitOpen);
});

test("refusals do not open the breaker", async () => {
  s.on("POST", "/v1/decisions.evaluate", err(400, "VALIDATION_ERROR"));
  const c = s.client({ breakerThreshold: 1 });
  for (let i = 0; i < 3; i++) await assert.rejects(c.guard("x"), APIError);
  assert.equal(c.breaker.state, "closed");
});

test("a transport failure is unavailable", async () => {
  const c = new Vigil({ baseUrl: "http://127.0.0.1:9", apiKey: "k", maxRetries: 1 });
  c.http.sleep = async () => {};
  await assert.rejects(c.guard("x"), VigilUnavailable);
  await c.close(0);
});

test("breaker counts consecutive failures; one trial when half-open", () => {
  let t = 0;
  const b = new CircuitBreaker(3, 10, () => t);
  b.failure(); b.failure(); b.success(); b.failure(); b.failure();
  assert.equal(b.state, "closed");
  b.failure();
  assert.equal(b.state, "open");
  assert.equal(b.allow(), false);
  t = 10;
  assert.equal(b.allow(), true);
  assert.equal(b.allow(), false);
});
