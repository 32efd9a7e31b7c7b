// What guard() costs over the raw fetch it makes.
//
// Runs a local HTTP server that answers every decisions.evaluate with allow,
// then times N raw fetch POSTs (the same body) and N guard() calls,
// interleaved in one run, and prints p50/p99 of each and their difference.
// The server is the same for both, so the difference is the SDK's own work.
//
//     node sdk/typescript/bench/guard-overhead.mjs [N]
import { createServer } from "node:http";
import { randomUUID } from "node:crypto";
import { Vigil } from "../dist/index.js";

const ANSWER = JSON.stringify({ decision: "allow", decisionId: "dec-1", reasonCodes: [], requiresDeskApproval: false, packHash: "sha256:" + "0".repeat(64), matches: [], evaluatedAt: "2026-01-01T00:00:00Z" });
const srv = createServer((req, res) => {
  req.resume();
  req.on("end", () => {
    res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(ANSWER) });
    res.end(ANSWER);
  });
});
await new Promise((r) => srv.listen(0, "127.0.0.1", r));
const url = `http://127.0.0.1:${srv.address().port}`;
const n = Number(process.argv[2] ?? 2000);
const c = new Vigil({ baseUrl: url, apiKey: "key", agentId: "bench-agent", sessionId: "bench" });
const args = { to: "acct-1", amount: 50 };

async function raw() {
  const body = JSON.stringify({ agentId: "bench-agent", sessionId: "bench", context: {}, action: { kind: "tool_call", tool: "sdk_refund", arguments: args } });
  const res = await fetch(url + "/v1/decisions.evaluate", { method: "POST", body, headers: { authorization: "Bearer key", "content-type": "application/json", "idempotency-key": randomUUID() } });
  await res.json();
}
const guard = () => c.guard("sdk_refund", { arguments: args });

for (const f of [raw, guard]) for (let i = 0; i < 200; i++) await f();
const tRaw = [], tGuard = [];
for (let i = 0; i < n; i++) {
  for (const [f, out] of [[raw, tRaw], [guard, tGuard]]) {
    const t0 = performance.now();
    await f();
    out.push((performance.now() - t0) * 1000);
  }
}
await c.close();
srv.close();
const pct = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];
for (const [name, xs] of [["raw fetch POST", tRaw], ["guard()", tGuard]]) console.log(`${name.padEnd(16)} p50 ${pct(xs, 50).toFixed(0).padStart(7)} µs  p99 ${pct(xs, 99).toFixed(0).padStart(7)} µs`);
console.log(`${"overhead".padEnd(16)} p50 ${(pct(tGuard, 50) - pct(tRaw, 50)).toFixed(0).padStart(7)} µs  p99 ${(pct(tGuard, 99) - pct(tRaw, 99)).toFixed(0).padStart(7)} µs  (ratio p50 ${(pct(tGuard, 50) / pct(tRaw, 50)).toFixed(2)}×)   n=${n} each, interleaved`);
