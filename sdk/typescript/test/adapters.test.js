// Framework adapters (without the frameworks) and the arguments digest.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { afterEach, beforeEach, test } from "node:test";
import { ActionBlocked, argumentsDigest, canonicalJson } from "../dist/index.js";
import { guardTools } from "../dist/adapters/openai-agents.js";
import { vigilCallbackHandler } from "../dist/adapters/langchain.js";
import { startServer } from "./helpers.js";

let s;
beforeEach(async () => (s = await startServer()));
afterEach(async () => s.close());

test("the digest matches Vigil's Go encoding", async () => {
  // Vectors made by Go's encoding/json (decode into map[string]any, encode), as the server does.
  const vectors = JSON.parse(readFileSync(new URL("../../testdata/digest_vectors.json", import.meta.url), "utf8"));
  for (const v of vectors) {
    const args = JSON.parse(v.json);
    assert.equal(canonicalJson(args), v.canonical);
    // argumentsDigest digests what goes on the wire, where -0 is 0.
    if (!v.json.includes("-0.0")) assert.equal(await argumentsDigest(args), v.digest);
  }
  assert.equal(await argumentsDigest(undefined), await argumentsDigest({}));
  assert.throws(() => canonicalJson({ x: NaN }), RangeError);
  assert.throws(() => canonicalJson({ x: 1n }), TypeError);
});

test("keys are sorted by code point, as Go sorts bytes", () => {
  assert.equal(canonicalJson({ "\uff61": 1, "\u{1F600}": 2 }), '{"\uff61":1,"\u{1F600}":2}');
});

test("the adapters import no framework", () => {
  for (const f of ["openai-agents", "langchain"]) {
    const src = readFileSync(new URL(`../dist/adapters/${f}.js`, import.meta.url), "utf8");
    const imports = [...src.matchAll(/from\s+"([^"]+)"/g)].map((m) => m[1]);
    assert.ok(imports.every((i) => i.startsWith("../")), `${f}: ${imports}`);
  }
});

function fakeTool() {
  // The shape of an @openai/agents FunctionTool the adapter relies on.
  const ran = [];
  return { ran, type: "function", name: "execute_refund", async invoke(_ctx, input) { ran.push(JSON.parse(input)); return "refunded"; } };
}

test("OpenAI Agents tool guard", async () => {
  s.on("POST", "/v1/decisions.evaluate", [200, {}, { decision: "allow", decisionId: "d" }], [200, {}, { decision: "block", decisionId: "d2", reasonCodes: ["TOO_BIG"] }]);
  const tool = fakeTool();
  const [g] = guardTools(s.client(), [tool]);
  assert.equal(g.type, "function");
  assert.equal(await g.invoke({}, '{"amount": 5}'), "refunded");
  assert.match(await g.invoke({}, '{"amount": 5000}'), /TOO_BIG/);
  assert.deepEqual(tool.ran, [{ amount: 5 }]);
  assert.deepEqual(s.calls("/v1/decisions.evaluate")[1].body.action, { kind: "tool_call", tool: "execute_refund", arguments: { amount: 5000 } });
});

test("LangChain handler guards and reports", async () => {
  s.on("POST", "/v1/decisions.evaluate", [200, {}, { decision: "allow", decisionId: "d" }], [200, {}, { decision: "block", decisionId: "d2", reasonCodes: ["NO"] }],
    [200, {}, { decision: "allow", decisionId: "d3" }]);
  s.on("POST", "/v1/events/batch", [202, {}, { results: [] }]);
  const c = s.client();
  const h = vigilCallbackHandler(c);
  assert.ok(h.raiseError && h.awaitHandlers, "LangChain must wait for the guard and let a refusal stop the tool");
  await h.handleToolStart({ name: "search" }, '{"q":"x"}', "run-1");
  await h.handleToolEnd("out", "run-1");
  await assert.rejects(h.handleToolStart({ name: "rm" }, "/", "run-2"), ActionBlocked);
  // A tool invoked with a tool call (LangGraph's ToolNode) logs the call: its name and args are guarded.
  await h.handleToolStart({ lc: 1, type: "not_implemented", id: ["langchain", "tools", "DynamicStructuredTool"] },
    JSON.stringify({ type: "tool_call", name: "lookup", args: { id: 7 }, id: "call_1" }), "run-3");
  const asked = s.calls("/v1/decisions.evaluate").map((r) => r.body.action);
  assert.deepEqual(asked.map((a) => a.arguments), [{ q: "x" }, { input: "/" }, { id: 7 }]);
  assert.deepEqual(asked.map((a) => a.tool), ["search", "rm", "lookup"]);
  assert.equal(await c.flush(5000), true);
  assert.equal(s.calls("/v1/events/batch")[0].body.events[0].payload.toolName, "search");
});
