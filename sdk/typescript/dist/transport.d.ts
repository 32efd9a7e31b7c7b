/** Statuses worth another try: throttled, or the server could not answer now. */
export declare const RETRY_STATUSES: ReadonlySet<number>;
/**
 * Opens after `threshold` consecutive failed calls, for `cooldownMs`. While
 * open, calls fail at once (CircuitOpen) instead of waiting on a Vigil that
 * is down. After the cool-down one trial call is let through (half-open):
 * its success closes the breaker, its failure opens it again.
 */
export declare class CircuitBreaker {
    readonly threshold: number;
    readonly cooldownMs: number;
    /** The clock, in milliseconds; replaceable in tests. */
    now: () => number;
    private failures;
    private openedAt;
    private trial;
    constructor(threshold?: number, cooldownMs?: number, 
    /** The clock, in milliseconds; replaceable in tests. */
    now?: () => number);
    get state(): "closed" | "open" | "half-open";
    allow(): boolean;
    success(): void;
    failure(): void;
}
/** Seconds to wait from a Retry-After header (delta-seconds or HTTP date). */
export declare function parseRetryAfter(value: string | null | undefined, now?: number): number | undefined;
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
export declare class Transport {
    readonly opts: TransportOptions;
    readonly baseUrl: string;
    /** Waits between tries; replaceable in tests. */
    sleep: (ms: number) => Promise<void>;
    constructor(opts: TransportOptions);
    /** Full jitter over an exponential ceiling; never shorter than Retry-After. */
    backoff(attempt: number, retryAfterSec?: number): number;
    /**
     * One logical call, retried on 429/502/503/504 and transport errors. A
     * non-retryable error answer throws APIError; running out of tries throws
     * VigilUnavailable; an open breaker throws CircuitOpen without sending.
     */
    request(method: string, path: string, body?: unknown, ro?: RequestOptions): Promise<Response>;
}
