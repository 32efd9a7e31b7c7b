import { APIError, CircuitOpen, type ErrorDetail, VigilUnavailable } from "./errors.js";

/** Statuses worth another try: throttled, or the server could not answer now. */
export const RETRY_STATUSES: ReadonlySet<number> = new Set([429, 502, 503, 504]);

/**
 * Opens after `threshold` consecutive failed calls, for `cooldownMs`. While
 * open, calls fail at once (CircuitOpen) instead of waiting on a Vigil that
 * is down. After the cool-down one trial call is let through (half-open):
 * its success closes the breaker, its failure opens it again.
 */
export class CircuitBreaker {
  private failures = 0;
  private openedAt: number | undefined;
  private trial = false;

  constructor(
    readonly threshold = 5,
    readonly cooldownMs = 30_000,
    /** The clock, in milliseconds; replaceable in tests. */
    public now: () => number = () => performance.now(),
  ) {}

  get state(): "closed" | "open" | "half-open" {
    if (this.openedAt === undefined) return "closed";
    return this.now() - this.openedAt >= this.cooldownMs ? "half-open" : "open";
  }

  allow(): boolean {
    if (this.openedAt === undefined) return true;
    if (this.now() - this.openedAt < this.cooldownMs || this.trial) return false;
    this.trial = true;
    return true;
  }

  success(): void {
    this.failures = 0;
    this.openedAt = undefined;
    this.trial = false;
  }

  failure(): void {
    this.failures++;
    if (this.trial || this.failures >= Math.max(1, this.threshold)) this.openedAt = this.now();
    this.trial = false;
  }
}

/** Seconds to wait from a Retry-After header (delta-seconds or HTTP date). */
export function parseRetryAfter(value: string | null | undefined, now: number = Date.now()): number | undefined {
  if (!value) return undefined;
  const v = value.trim();
  if (/^\d+(\.\d+)?$/.test(v)) return Number(v);
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, (at - now) / 1000);
}

export interface TransportOptions {
  baseUrl: string;
  apiKey: string;
  timeoutMs: number;
  maxRetries: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
  retryAfterMaxMs: number;
  breaker: CircuitBreaker;
  headers: Record<string, string>;
}

export interface RequestOptions {
  idempotencyKey?: string;
  timeoutMs?: number;
  /** performance.now() after which no retry is started. */
  deadline?: number;
  signal?: AbortSignal;
}

export interface Response {
  status: number;
  headers: Headers;
  body: unknown;
}

/** Sends JSON requests to one Vigil base URL with the client's retry policy. */
export class Transport {
  readonly baseUrl: string;
  /** Waits between tries; replaceable in tests. */
  sleep: (ms: number) => Promise<void> = (ms) => new Promise((r) => setTimeout(r, ms));

  constructor(readonly opts: TransportOptions) {
    this.baseUrl = opts.baseUrl.replace(/\/+$/, "");
  }

  /** Full jitter over an exponential ceiling; never shorter than Retry-After. */
  backoff(attempt: number, retryAfterSec?: number): number {
    const ceiling = Math.min(this.opts.backoffMaxMs, this.opts.backoffBaseMs * 2 ** attempt);
    const delay = Math.random() * ceiling;
    if (retryAfterSec !== undefined) return Math.min(this.opts.retryAfterMaxMs, retryAfterSec * 1000) + delay * 0.1;
    return delay;
  }

  /**
   * One logical call, retried on 429/502/503/504 and transport errors. A
   * non-retryable error answer throws APIError; running out of tries throws
   * VigilUnavailable; an open breaker throws CircuitOpen without sending.
   */
  async request(method: string, path: string, body?: unknown, ro: RequestOptions = {}): Promise<Response> {
    const { breaker, maxRetries } = this.opts;
    if (!breaker.allow()) throw new CircuitOpen(`vigil: circuit open after repeated failures; ${method} ${path} not sent`);
    const headers: Record<string, string> = { authorization: `Bearer ${this.opts.apiKey}`, accept: "application/json", ...this.opts.headers };
    const data = body === undefined ? undefined : JSON.stringify(body);
    if (data !== undefined) headers["content-type"] = "application/json";
    if (ro.idempotencyKey) headers["idempotency-key"] = ro.idempotencyKey;
    let last: unknown;
    for (let attempt = 0; attempt <= maxRetries; attempt++) {
      let retryAfter: number | undefined;
      try {
        const signals = [AbortSignal.timeout(ro.timeoutMs ?? this.opts.timeoutMs)];
        if (ro.signal) signals.push(ro.signal);
        const res = await fetch(this.baseUrl + path, { method, headers, body: data, signal: signals.length > 1 ? anySignal(signals) : signals[0] });
        const text = await res.text();
        if (res.status < 400) {
          breaker.success();
          return { status: res.status, headers: res.headers, body: decode(text) };
        }
        const err = apiError(res.status, res.headers, text);
        if (!RETRY_STATUSES.has(res.status)) {
          breaker.success(); // a refusal is an answer: Vigil is up
          throw err;
        }
        last = err;
        retryAfter = err.retryAfter;
      } catch (e) {
        if (e instanceof APIError && !RETRY_STATUSES.has(e.status)) throw e;
        if (ro.signal?.aborted) throw new VigilUnavailable(`vigil: ${method} ${path} aborted`, { cause: e });
        if (!(e instanceof APIError)) last = e;
      }
      if (attempt === maxRetries) break;
      const delay = this.backoff(attempt, retryAfter);
      if (ro.deadline !== undefined && performance.now() + delay >= ro.deadline) break;
      await this.sleep(delay);
    }
    const throttled = last instanceof APIError && last.status === 429;
    if (!throttled) breaker.failure();
    const what = last instanceof Error ? last.message : String(last);
    throw new VigilUnavailable(`vigil: ${method} ${path} ${throttled ? "still throttled" : "failed"} after ${maxRetries} retries: ${what}`, { cause: last });
  }
}

function anySignal(signals: AbortSignal[]): AbortSignal {
  const any = (AbortSignal as unknown as { any?: (s: AbortSignal[]) => AbortSignal }).any;
  if (any) return any(signals);
  const c = new AbortController();
  for (const s of signals) {
    if (s.aborted) c.abort(s.reason);
    else s.addEventListener("abort", () => c.abort(s.reason), { once: true });
  }
  return c.signal;
}

function decode(text: string): unknown {
  if (!text) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function apiError(status: number, headers: Headers, text: string): APIError {
  const body = decode(text) as Record<string, unknown> | undefined;
  let code = "", message = text.slice(0, 200), details: ErrorDetail[] = [], requestId = "";
  if (body && typeof body === "object") {
    const env = body.error as Record<string, unknown> | undefined;
    if (env && typeof env === "object") {
      code = String(env.code ?? "");
      message = String(env.message ?? message);
      if (Array.isArray(env.details)) details = env.details.filter((d) => d && typeof d === "object") as ErrorDetail[];
    }
    code ||= String(body.code ?? "");
    requestId = String(body.requestId ?? "");
  }
  return new APIError(status, code, message, details, requestId, parseRetryAfter(headers.get("retry-after")));
}
