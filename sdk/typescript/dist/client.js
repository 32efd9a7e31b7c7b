import { Batcher, randomId } from "./batcher.js";
import { argumentsDigest } from "./digest.js";
import { ActionBlocked, APIError, ApprovalMismatch, ApprovalRejected, ApprovalTimeout, CircuitOpen, VigilUnavailable } from "./errors.js";
import { CircuitBreaker, Transport } from "./transport.js";
export const VERSION = "0.1.0";
/** The longest wait one long-poll asks for, in seconds (the API allows 60). */
const LONG_POLL_S = 30;
/**
 * A client of one Vigil deployment, for one agent.
 *
 *     const vigil = new Vigil({ baseUrl: "http://localhost:8080", apiKey, agentId: "refund-bot" });
 *     const refund = vigil.tool("execute_refund", async (a: { order: string; amount: number }) => …);
 *
 * Reported events are sent in the background; `await vigil.close()` flushes them.
 */
export class Vigil {
    agentId;
    sessionId;
    breaker;
    /** @internal */
    http;
    batcher;
    failOpen;
    approvalTimeoutMs;
    constructor(o) {
        if (!o.baseUrl || !o.apiKey)
            throw new TypeError("baseUrl and apiKey are required");
        const headers = { "x-vigil-sdk": `vigil-typescript/${VERSION}` };
        if (o.tenant)
            headers["x-tenant-id"] = o.tenant;
        if (o.framework)
            headers["x-vigil-framework"] = o.framework;
        if (o.agentVersion)
            headers["x-vigil-agent-version"] = o.agentVersion;
        this.breaker = new CircuitBreaker(o.breakerThreshold ?? 5, o.breakerCooldownMs ?? 30_000);
        this.http = new Transport({
            baseUrl: o.baseUrl, apiKey: o.apiKey, timeoutMs: o.timeoutMs ?? 10_000, maxRetries: o.maxRetries ?? 3,
            backoffBaseMs: o.backoffBaseMs ?? 200, backoffMaxMs: o.backoffMaxMs ?? 5_000, retryAfterMaxMs: o.retryAfterMaxMs ?? 30_000,
            breaker: this.breaker, headers,
        });
        this.agentId = o.agentId;
        this.sessionId = o.sessionId ?? `ses-${randomId()}`;
        this.failOpen = o.failOpen ?? false;
        this.approvalTimeoutMs = o.approvalTimeoutMs ?? 300_000;
        this.batcher = new Batcher((events, key) => this.sendBatch(events, key), {
            batchSize: o.batchSize ?? 100, lingerMs: o.lingerMs ?? 500, maxQueue: o.maxQueue ?? 10_000, retryPauseMs: 1_000, onError: o.onError,
        });
    }
    /** Counters of reported events. */
    get stats() {
        return { ...this.batcher.stats };
    }
    /** Send every queued event now; true when they all left in time. */
    flush(timeoutMs = 10_000) {
        return this.batcher.flush(timeoutMs);
    }
    /** Flush queued events (up to timeoutMs) and refuse new ones. */
    close(timeoutMs = 10_000) {
        return this.batcher.close(timeoutMs);
    }
    /** Complete an event with the client's defaults (id, agent, session, time, schema). */
    event(e) {
        if (!e || typeof e.category !== "string")
            throw new TypeError("an event needs a category (such as tool_api)");
        const ev = { ...e };
        ev.eventId ??= randomId();
        if (this.agentId && !ev.agentId)
            ev.agentId = this.agentId;
        ev.sessionId ??= this.sessionId;
        ev.sourceTimestamp ??= new Date().toISOString();
        ev.schemaVersion ??= "1.0";
        ev.payload ??= {};
        return ev;
    }
    /** Queue an event for the background sender; never blocks. False when the buffer is full and it was dropped. */
    report(e) {
        return this.batcher.add(this.event(e));
    }
    /** Send one event now (POST /v1/events); resolves to the answer. */
    async reportNow(e) {
        const ev = this.event(e);
        return ((await this.http.request("POST", "/v1/events", ev, { idempotencyKey: ev.eventId })).body ?? {});
    }
    async sendBatch(events, key) {
        return (await this.http.request("POST", "/v1/events/batch", { events }, { idempotencyKey: key })).body;
    }
    /** Ask POST /v1/decisions.evaluate and return its answer as is. */
    async evaluate(action, o = {}) {
        const body = { action: toAction(action, o.arguments), context: o.context ?? {}, sessionId: o.sessionId ?? this.sessionId };
        if (this.agentId)
            body.agentId = this.agentId;
        const res = await this.http.request("POST", "/v1/decisions.evaluate", body, { idempotencyKey: o.idempotencyKey ?? randomId(), signal: o.signal });
        const d = res.body;
        if (!d || typeof d !== "object" || !d.decision)
            throw new VigilUnavailable("vigil: decision answer without a decision");
        return d;
    }
    /**
     * guard() without the redemption: for require_approval it resolves once a
     * person approved, and the caller must redeem() the decision with the
     * arguments it is about to run, just before running them.
     */
    async ask(action, o = {}) {
        let d;
        try {
            d = await this.evaluate(action, o);
        }
        catch (e) {
            if (e instanceof CircuitOpen && (o.failOpen ?? this.failOpen)) {
                console.warn(`vigil: breaker open, failing open for ${nameOf(action)}`);
                return { outcome: "", decisionId: "", reasonCodes: [], approved: false, approvedBy: [], redeemed: false, failedOpen: true, raw: {} };
            }
            throw e;
        }
        const outcome = String(d.decision);
        const reasonCodes = Array.isArray(d.reasonCodes) ? d.reasonCodes.map(String) : [];
        const decisionId = String(d.decisionId ?? "");
        if (outcome === "allow" || outcome === "warn") {
            return { outcome, decisionId, reasonCodes, approved: false, approvedBy: [], redeemed: false, failedOpen: false, raw: d };
        }
        if (outcome === "require_approval")
            return this.awaitApproval(decisionId, reasonCodes, d, o.approvalTimeoutMs ?? this.approvalTimeoutMs, o.signal);
        // block, or an outcome this SDK does not know: neither is a permission.
        throw new ActionBlocked(`vigil: ${nameOf(action)} blocked (${reasonCodes.join(", ") || outcome})`, { decisionId, reasonCodes, decision: d });
    }
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
    async guard(action, o = {}) {
        return this.redeem(await this.ask(action, o), o.arguments, o.signal);
    }
    /**
     * Redeem an approved decision for the arguments about to run. Rejects
     * with ApprovalMismatch when the approval was for other arguments
     * (checked here against its argumentsDigest, then by Vigil) or was
     * already redeemed. Decisions that needed no approval resolve unchanged.
     */
    async redeem(decision, args, signal) {
        if (decision.outcome !== "require_approval" || decision.redeemed)
            return decision;
        const { decisionId: id, reasonCodes, raw: d } = decision;
        const info = { decisionId: id, reasonCodes, decision: d };
        const want = d.approval?.argumentsDigest;
        const have = await argumentsDigest(args);
        if (want && want !== have)
            throw new ApprovalMismatch(`vigil: ${id} was approved for other arguments (${String(want)}, these are ${have})`, info);
        try {
            await this.http.request("POST", `/v1/decisions/${encodeURIComponent(id)}/redeem`, { arguments: args ?? {} }, { idempotencyKey: randomId(), signal });
        }
        catch (e) {
            if (e instanceof APIError)
                throw new ApprovalMismatch(`vigil: redeeming ${id} refused (${e.detailCode || e.code}): ${e.apiMessage}`, { ...info, cause: e });
            throw new ApprovalTimeout(`vigil: could not redeem ${id}: ${e.message}`, { ...info, cause: e });
        }
        decision.redeemed = true;
        return decision;
    }
    async awaitApproval(id, reasonCodes, first, limitMs, signal) {
        const deadline = performance.now() + limitMs;
        const path = `/v1/decisions/${encodeURIComponent(id)}`;
        let d = first;
        const info = () => ({ decisionId: id, reasonCodes, decision: d });
        for (;;) {
            const left = deadline - performance.now();
            if (left <= 0)
                throw new ApprovalTimeout(`vigil: no decision on ${id} within ${limitMs} ms; the action did not run`, info());
            const wait = Math.max(1, Math.floor(Math.min(LONG_POLL_S * 1000, left) / 1000));
            try {
                const res = await this.http.request("GET", `${path}?wait=${wait}s`, undefined, { timeoutMs: (wait + 10) * 1000, deadline, signal });
                if (res.body && typeof res.body === "object")
                    d = res.body;
            }
            catch (e) {
                // Fail closed: an approval that cannot be read is no approval.
                throw new ApprovalTimeout(`vigil: could not read the decision on ${id}: ${e.message}`, { ...info(), cause: e });
            }
            if (d.final)
                break;
        }
        const approvedBy = d.approvalProgress?.approvedBy?.map(String) ?? [];
        if (d.outcome !== "approved")
            throw new ApprovalRejected(`vigil: ${id} was ${String(d.outcome ?? "not approved")}`, info());
        return { outcome: "require_approval", decisionId: id, reasonCodes, approved: true, approvedBy, redeemed: false, failedOpen: false, raw: d };
    }
    /**
     * Wrap a tool function so every call is guarded first. The call's first
     * argument, when it is a plain object, is the action's `arguments`
     * (otherwise `{args: [...]}`); the outcome is reported as a tool_api event.
     */
    tool(name, fn, o = {}) {
        const kind = o.kind ?? "tool_call";
        const report = o.report ?? true;
        const guarded = async (...a) => {
            const args = argsOf(a);
            const d = await this.guard({ kind, tool: name }, { arguments: args, failOpen: o.failOpen });
            try {
                const out = await fn(...a);
                if (report)
                    this.report(await this.toolEvent(name, args, d));
                return out;
            }
            catch (e) {
                if (report)
                    this.report(await this.toolEvent(name, args, d, e));
                throw e;
            }
        };
        Object.defineProperty(guarded, "name", { value: fn.name || name });
        return guarded;
    }
    /** The same as tool(), named for readers who wrap rather than declare. */
    wrap(name, fn, o = {}) {
        return this.tool(name, fn, o);
    }
    async toolEvent(tool, args, d, error) {
        let argumentsHash = "";
        try {
            argumentsHash = await argumentsDigest(args);
        }
        catch {
            // arguments JSON cannot carry: reported without a hash
        }
        const payload = { toolName: tool, argumentsHash, decisionId: d.decisionId, outcome: d.outcome, status: error ? "error" : "ok" };
        if (error)
            payload.error = error instanceof Error ? error.name : typeof error;
        return { category: "tool_api", payload };
    }
}
function toAction(action, args) {
    const a = typeof action === "string" ? { kind: "tool_call", tool: action } : { ...action };
    if (args !== undefined)
        a.arguments = args;
    return a;
}
function nameOf(action) {
    return typeof action === "string" ? action : String(action.tool ?? action.target ?? action.kind ?? "action");
}
function argsOf(a) {
    if (a.length === 1 && a[0] !== null && typeof a[0] === "object" && !Array.isArray(a[0]))
        return JSON.parse(JSON.stringify(a[0]));
    if (a.length === 0)
        return {};
    return { args: JSON.parse(JSON.stringify(a)) };
}
