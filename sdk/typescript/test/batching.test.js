// report(): background batches by size and linger, bounded memory, flush on close.
import assert from "node:assert/strict";
import { afterEach, beforeEach, test } from "node:test";
import { err, eventually, startServer } from "./helpers.js";

let s;
beforeEach(async () => (s = await startServer()));
afterEach(async () => s.close());

const okBatch = (r) => [202, {}, { results: r.body.events.map((e, index) => ({ index, eventId: e.eventId, status: "accepted" })) }];
const sent = () => s.calls("/v1/events/batch").flatMap((r) => r.body.events);

test("batches by size and flushes the rest on close", async () => {
  s.on("POST", "/v1/events/batch", okBatch);
  const c = s.client({ batchSize: 3 });
  for (let i = 0; i < 7; i++) assert.equal(c.report({ category: "tool_api", payload: { i } }), true);
  await eventually(() => s.calls("/v1/events/batch").length === 2);
  assert.deepEqual(s.calls("/v1/events/batch").map((r) => r.body.events.length), [3, 3]);
  assert.equal(await c.close(5000), true);
  assert.deepEqual(sent().map((e) => e.payload.i), [0, 1, 2, 3, 4, 5, 6]);
  const ev = sent()[0];
  assert.equal(ev.agentId, "bot-1");
  assert.equal(ev.sessionId, "s-1");
  assert.equal(ev.schemaVersion, "1.0");
  assert.match(ev.sourceTimestamp, /Z$/);
  assert.equal(ev.eventId.length, 36);
  assert.ok(s.calls("/v1/events/batch").every((r) => r.headers["idempotency-key"]));
  assert.equal(c.stats.sent, 7);
  assert.throws(() => c.report({ category: "late" }), /closed/);
});

test("linger sends a partial batch", async () => {
  s.on("POST", "/v1/events/batch", okBatch);
  const c = s.client({ lingerMs: 20 });
  c.report({ category: "tool_api" });
  await eventually(() => sent().length === 1);
});

test("bounded memory drops and counts", async () => {
  s.on("POST", "/v1/events/batch", err(503, "SERVICE_UNAVAILABLE"));
  const c = s.client({ maxQueue: 3 });
  assert.deepEqual(Array.from({ length: 5 }, () => c.report({ category: "x" })), [true, true, true, false, false]);
  assert.equal(c.stats.dropped, 2);
});

test("failed items are retried, rejected ones reported", async () => {
  const seen = [];
  s.on("POST", "/v1/events/batch", (r) => {
    if (s.calls("/v1/events/batch").length === 1) {
      return [202, {}, { results: [
        { index: 0, status: "accepted" },
        { index: 1, status: "failed" },
        { index: 2, status: "rejected", error: { code: "VALIDATION_ERROR", message: "bad", details: [{ path: "events[2].category", code: "invalid_format" }] } },
      ] }];
    }
    return okBatch(r);
  });
  const c = s.client({ batchSize: 3, onError: (ev, e) => seen.push([ev.payload.i, e.detailCode]) });
  c.batcher.opts.retryPauseMs = 10;
  for (let i = 0; i < 3; i++) c.report({ category: "tool_api", payload: { i } });
  assert.equal(await c.flush(5000), true);
  assert.deepEqual(sent().map((e) => e.payload.i), [0, 1, 2, 1]);
  assert.deepEqual(seen, [[2, "invalid_format"]]);
  assert.deepEqual([c.stats.sent, c.stats.rejected, c.stats.retried], [2, 1, 1]);
});

test("unavailable keeps events until Vigil is back, with the same eventIds", async () => {
  const down = err(503, "SERVICE_UNAVAILABLE");
  s.on("POST", "/v1/events/batch", down, down, down, down, down, okBatch);
  const c = s.client({ batchSize: 2, maxRetries: 1 });
  c.batcher.opts.retryPauseMs = 10;
  c.report({ category: "a" });
  c.report({ category: "b" });
  assert.equal(await c.flush(5000), true);
  assert.deepEqual(sent().slice(-2).map((e) => e.category), ["a", "b"]);
  assert.equal(c.stats.sent, 2);
  assert.equal(new Set(s.calls("/v1/events/batch").map((r) => r.body.events[0].eventId)).size, 1);
});

test("flush times out while Vigil is down", async () => {
  s.on("POST", "/v1/events/batch", err(503, "SERVICE_UNAVAILABLE"));
  const c = s.client({ maxRetries: 0 });
  c.batcher.opts.retryPauseMs = 10;
  c.report({ category: "a" });
  assert.equal(await c.flush(200), false);
  assert.equal(c.batcher.pending(), 1);
});
