// A scripted local HTTP server standing in for Vigil in the unit tests. The
// unit tests check the SDK's own machinery (retries, breaker, batching, the
// approval flow) against answers they choose; conformance.test.js runs the
// shared scenarios against a real Vigil.
import { createServer } from "node:http";
import { Vigil } from "../dist/index.js";

export function err(status, code, message = "x", details = [], retryAfter) {
  const headers = retryAfter === undefined ? {} : { "retry-after": retryAfter };
  return [status, headers, { error: { code, message, details }, code: code.toLowerCase(), message, requestId: "r-1" }];
}

export async function startServer() {
  const routes = new Map();
  const requests = [];
  const srv = createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const raw = Buffer.concat(chunks).toString();
      const r = { method: req.method, path: req.url, headers: req.headers, body: raw ? JSON.parse(raw) : undefined };
      requests.push(r);
      const script = routes.get(`${req.method} ${req.url.split("?")[0]}`);
      let a = [404, {}, { error: { code: "NOT_FOUND", message: "no route" } }];
      if (typeof script === "function") a = script(r);
      else if (script) a = script.length > 1 ? script.shift() : script[0];
      if (typeof a === "function") a = a(r);
      const [status, headers, body] = a;
      const data = body === undefined ? "" : JSON.stringify(body);
      res.writeHead(status, { "content-type": "application/json", ...headers });
      res.end(data);
    });
  });
  await new Promise((r) => srv.listen(0, "127.0.0.1", r));
  const made = [];
  return {
    url: `http://127.0.0.1:${srv.address().port}`,
    requests,
    on(method, path, ...answers) {
      routes.set(`${method} ${path}`, answers.length === 1 && typeof answers[0] === "function" ? answers[0] : answers);
    },
    calls(path) {
      return requests.filter((r) => r.path.split("?")[0] === path);
    },
    client(opts = {}) {
      const c = new Vigil({ baseUrl: this.url, apiKey: "key-1", agentId: "bot-1", sessionId: "s-1", lingerMs: 60_000, ...opts });
      c.sleeps = [];
      c.http.sleep = async (ms) => {
        c.sleeps.push(ms);
      };
      made.push(c);
      return c;
    },
    async close() {
      await Promise.all(made.map((c) => c.close(200)));
      srv.closeAllConnections?.();
      await new Promise((r) => srv.close(r));
    },
  };
}

export async function eventually(cond, timeoutMs = 5000) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  if (!(await cond())) throw new Error("condition not met in time");
}
