import { type BatchStats, type VigilEvent } from "./batcher.js";
import { CircuitBreaker, Transport } from "./transport.js";
export declare const VERSION = "0.1.0";
export interface VigilOptions {
    /** Base URL of the Vigil API, e.g. http://localhost:8080. */
    baseUrl: string;
    apiKey: string;
    /** The agent this client acts for (may be left out with an agent key bound to one agent). */
    agentId?: string;
    /** Session of reported events and decisions; a new one per client by default. */
    sessionId?: string;
    tenant?: string;
    timeoutMs?: number;
    /** Retries on 429/502/503/504 and transport errors (default 3). */
    maxRetries?: number;
    backoffBaseMs?: number;
    backoffMaxMs?: number;
    retryAfterMaxMs?: number;
    breakerThreshold?: number;
    breakerCooldownMs?: number;
    /** While the circuit breaker is open, let guarded actions run (default false: fail closed). */
    failOpen?: boolean;
    /** The longest guard() waits for a person to decide (default 300 s). */
    approvalTimeoutMs?: number;
    batchSize?: number;
    lingerMs?: number;
    maxQueue?: number;
    framework?: string;
    agentVersion?: string;
    onError?: (event: VigilEvent, error: Error) => void;
}
export type Action = string | ({
    kind?: string;
    tool?: string;
    target?: string;
} & Record<string, unknown>);
export interface GuardOptions {
    /** The tool arguments about to run. */
    arguments?: Record<string, unknown>;
    context?: Record<string, unknown>;
    sessionId?: string;
    /** Per call site: run the action while the circuit breaker is open. */
    failOpen?: boolean;
    approvalTimeoutMs?: number;
    signal?: AbortSignal;
}
/** What Vigil decided about an action the SDK let run. */
export interface Decision {
    /** allow or warn; require_approval once a person approved it; "" when failed open. */
    outcome: "allow" | "warn" | "require_approval" | "";
    decisionId: string;
    reasonCodes: string[];
    approved: boolean;
    approvedBy: string[];
    /** The approval was redeemed for the arguments about to run. */
    redeemed: boolean;
    /** Vigil was not asked: the breaker was open and the call site fails open. */
    failedOpen: boolean;
    raw: Record<string, unknown>;
}
export interface ToolOptions {
    kind?: string;
    failOpen?: boolean;
    /** Report each call's outcome as a tool_api event (default true). */
    report?: boolean;
}
export type EventInput = {
    category: string;
    payload?: Record<string, unknown>;
} & Record<string, unknown>;
type Obj = Record<string, unknown>;
/**
 * A client of one Vigil deployment, for one agent.
 *
 *     const vigil = new Vigil({ baseUrl: "http://localhost:8080", apiKey, agentId: "refund-bot" });
 *     const refund = vigil.tool("execute_refund", async (a: { order: string; amount: number }) => …);
 *
 * Reported events are sent in the background; `await vigil.close()` flushes them.
 */
export declare class Vigil {
    readonly agentId?: string;
    readonly sessionId: string;
    readonly breaker: CircuitBreaker;
    /** @internal */
    readonly http: Transport;
    private readonly batcher;
    private readonly failOpen;
    private readonly approvalTimeoutMs;
    constructor(o: VigilOptions);
    /** Counters of reported events. */
    get stats(): BatchStats;
    /** Send every queued event now; true when they all left in time. */
    flush(timeoutMs?: number): Promise<boolean>;
    /** Flush queued events (up to timeoutMs) and refuse new ones. */
    close(timeoutMs?: number): Promise<boolean>;
    /** Complete an event with the client's defaults (id, agent, session, time, schema). */
    event(e: EventInput): VigilEvent;
    /** Queue an event for the background sender; never blocks. False when the buffer is full and it was dropped. */
    report(e: EventInput): boolean;
    /** Send one event now (POST /v1/events); resolves to the answer. */
    reportNow(e: EventInput): Promise<Obj>;
    private sendBatch;
    /** Ask POST /v1/decisions.evaluate and return its answer as is. */
    evaluate(action: Action, o?: Omit<GuardOptions, "failOpen" | "approvalTimeoutMs"> & {
        idempotencyKey?: string;
    }): Promise<Obj>;
    /**
     * guard() without the redemption: for require_approval it resolves once a
     * person approved, and the caller must redeem() the decision with the
     * arguments it is about to run, just before running them.
     */
    ask(action: Action, o?: GuardOptions): Promise<Decision>;
    /**
     * Ask Vigil before running an action; resolve only if it may run.
     * allow and warn resolve at once; block rejects with ActionBlocked and
     * the reason codes; require_approval waits (at most approvalTimeoutMs)
     * for a person: approved, the approval is redeemed for exactly these
     * arguments and the promise resolves; rejected, expired or undecided, it
     * rejects. Vigil unreachable rejects with VigilUnavailable; while the
     * circuit breaker is open, CircuitOpen — unless failOpen (per call, else
     * the client's) resolves with `failedOpen: true`.
     */
    guard(action: Action, o?: GuardOptions): Promise<Decision>;
    /**
     * Redeem an approved decision for the arguments about to run. Rejects
     * with ApprovalMismatch when the approval was for other arguments
     * (checked here against its argumentsDigest, then by Vigil) or was
     * already redeemed. Decisions that needed no approval resolve unchanged.
     */
    redeem(decision: Decision, args: Obj | undefined, signal?: AbortSignal): Promise<Decision>;
    private awaitApproval;
    /**
     * Wrap a tool function so every call is guarded first. The call's first
     * argument, when it is a plain object, is the action's `arguments`
     * (otherwise `{args: [...]}`); the outcome is reported as a tool_api event.
     */
    tool<A extends unknown[], R>(name: string, fn: (...args: A) => R | Promise<R>, o?: ToolOptions): (...args: A) => Promise<Awaited<R>>;
    /** The same as tool(), named for readers who wrap rather than declare. */
    wrap<A extends unknown[], R>(name: string, fn: (...args: A) => R | Promise<R>, o?: ToolOptions): (...args: A) => Promise<Awaited<R>>;
    private toolEvent;
}
export {};
