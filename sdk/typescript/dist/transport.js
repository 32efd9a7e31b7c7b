import { APIError, CircuitOpen, VigilUnavailable } from "./errors.js";
/** Statuses worth another try: throttled, or the server could not answer now. */
export const RETRY_STATUSES = new Set([429, 502, 503, 504]);
/**
 * Opens after `threshold` consecutive failed calls, for `cooldownMs`. While
 * open, calls fail at once (CircuitOpen) instead of waiting on a Vigil that
 * is down. After the cool-down one trial call is let through (half-open):
 * its success closes the breaker, its failure opens it again.
 */
export class CircuitBreaker {
    threshold;
    cooldownMs;
    now;
    failures = 0;
    openedAt;
    trial = false;
    constructor(threshold = 5, cooldownMs = 30_000, 
    /** The clock, in milliseconds; replaceable in tests. */
    now = () => performance.now()) {
        this.threshold = threshold;
        this.cooldownMs = cooldownMs;
        this.now = now;
    }
    get state() {
        if (this.openedAt === undefined)
            return "closed";
        return this.now() - this.openedAt >= this.cooldownMs ? "half-open" : "open";
    }
    allow() {
        if (this.openedAt === undefined)
            return true;
        if (this.now() - this.openedAt < this.cooldownMs || this.trial)
            return false;
        this.trial = true;
        return true;
    }
    success() {
        this.failures = 0;
        this.openedAt = undefined;
        this.trial = false;
    }
    failure() {
        this.failures++;
        if (this.trial || this.failures >= Math.max(1, this.threshold))
            this.openedAt = this.now();
        this.trial = false;
    }
}
/** Seconds to wait from a Retry-After header (delta-seconds or HTTP date). */
export function parseRetryAfter(value, now = Date.now()) {
    if (!value)
        return undefined;
    const v = value.trim();
    if (/^\d+(\.\d+)?$/.test(v))
        return Number(v);
    const at = Date.parse(v);
    return Number.isNaN(at) ? undefined : Math.max(0, (at - now) / 1000);
}
/** Sends JSON requests to one Vigil base URL with the client's retry policy. */
export class Transport {
    opts;
    baseUrl;
    /** Waits between tries; replaceable in tests. */
    sleep = (ms) => new Promise((r) => setTimeout(r, ms));
    constructor(opts) {
        this.opts = opts;
        this.baseUrl = opts.baseUrl.replace(/\/+$/, "");
    }
    /** Full jitter over an exponential ceiling; never shorter than Retry-After. */
    backoff(attempt, retryAfterSec) {
        const ceiling = Math.min(this.opts.backoffMaxMs, this.opts.backoffBaseMs * 2 ** attempt);
        const delay = Math.random() * ceiling;
        if (retryAfterSec !== undefined)
            return Math.min(this.opts.retryAfterMaxMs, retryAfterSec * 1000) + delay * 0.1;
        return delay;
    }
    /**
     * One logical call, retried on 429/502/503/504 and transport errors. A
     * non-retryable error answer throws APIError; running out of tries throws
     * VigilUnavailable; an open breaker throws CircuitOpen without sending.
     */
    async request(method, path, body, ro = {}) {
        const { breaker, maxRetries } = this.opts;
        if (!breaker.allow())
            throw new CircuitOpen(`vigil: circuit open after repeated failures; ${method} ${path} not sent`);
        const headers = { authorization: `Bearer ${this.opts.apiKey}`, accept: "application/json", ...this.opts.headers };
        const data = body === undefined ? undefined : JSON.stringify(body);
        if (data !== undefined)
            headers["content-type"] = "application/json";
        if (ro.idempotencyKey)
            headers["idempotency-key"] = ro.idempotencyKey;
        let last;
        for (let attempt = 0; attempt <= maxRetries; attempt++) {
            let retryAfter;
            try {
                const signals = [AbortSignal.timeout(ro.timeoutMs ?? this.opts.timeoutMs)];
                if (ro.signal)
                    signals.push(ro.signal);
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
            }
            catch (e) {
                if (e instanceof APIError && !RETRY_STATUSES.has(e.status))
                    throw e;
                if (ro.signal?.aborted)
                    throw new VigilUnavailable(`vigil: ${method} ${path} aborted`, { cause: e });
                if (!(e instanceof APIError))
                    last = e;
            }
            if (attempt === maxRetries)
                break;
            const delay = this.backoff(attempt, retryAfter);
            if (ro.deadline !== undefined && performance.now() + delay >= ro.deadline)
                break;
            await this.sleep(delay);
        }
        const throttled = last instanceof APIError && last.status === 429;
        if (!throttled)
            breaker.failure();
        const what = last instanceof Error ? last.message : String(last);
        throw new VigilUnavailable(`vigil: ${method} ${path} ${throttled ? "still throttled" : "failed"} after ${maxRetries} retries: ${what}`, { cause: last });
    }
}
function anySignal(signals) {
    const any = AbortSignal.any;
    if (any)
        return any(signals);
    const c = new AbortController();
    for (const s of signals) {
        if (s.aborted)
            c.abort(s.reason);
        else
            s.addEventListener("abort", () => c.abort(s.reason), { once: true });
    }
    return c.signal;
}
function decode(text) {
    if (!text)
        return undefined;
    try {
        return JSON.parse(text);
    }
    catch {
        return undefined;
    }
}
function apiError(status, headers, text) {
    const body = decode(text);
    let code = "", message = text.slice(0, 200), details = [], requestId = "";
    if (body && typeof body === "object") {
        const env = body.error;
        if (env && typeof env === "object") {
            code = String(env.code ?? "");
            message = String(env.message ?? message);
            if (Array.isArray(env.details))
                details = env.details.filter((d) => d && typeof d === "object");
        }
        code ||= String(body.code ?? "");
        requestId = String(body.requestId ?? "");
    }
    return new APIError(status, code, message, details, requestId, parseRetryAfter(headers.get("retry-after")));
}
