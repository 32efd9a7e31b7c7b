/** Every error the SDK throws derives from VigilError. */
export class VigilError extends Error {
    constructor(message, options) {
        super(message, options);
        this.name = new.target.name;
    }
}
/** An error answer of the Vigil API, decoded from its envelope. */
export class APIError extends VigilError {
    status;
    code;
    apiMessage;
    details;
    requestId;
    retryAfter;
    constructor(status, code, apiMessage, details = [], requestId = "", 
    /** Seconds from `Retry-After`, when the answer had one. */
    retryAfter) {
        super(`vigil: HTTP ${status} ${code}: ${apiMessage}`);
        this.status = status;
        this.code = code;
        this.apiMessage = apiMessage;
        this.details = details;
        this.requestId = requestId;
        this.retryAfter = retryAfter;
    }
    /** The first `details[].code` (`not_approved`, `arguments_mismatch`…), or "". */
    get detailCode() {
        return this.details.find((d) => typeof d.code === "string")?.code ?? "";
    }
}
/** Vigil gave no usable answer: transport failure, 5xx or 429 after every retry. */
export class VigilUnavailable extends VigilError {
}
/** The circuit breaker is open: recent calls failed, so this one was not sent. */
export class CircuitOpen extends VigilUnavailable {
}
/** The action must not run. `outcome` is "block" for a policy block. */
export class ActionBlocked extends VigilError {
    outcome = "block";
    decisionId;
    reasonCodes;
    decision;
    constructor(message, init = {}) {
        super(message, { cause: init.cause });
        this.decisionId = init.decisionId ?? "";
        this.reasonCodes = init.reasonCodes ?? [];
        this.decision = init.decision ?? {};
    }
}
/** A person (or an expiry) rejected the action held for approval. */
export class ApprovalRejected extends ActionBlocked {
    outcome = "rejected";
}
/** Nobody decided within the SDK's approval wait; the action did not run. */
export class ApprovalTimeout extends ActionBlocked {
    outcome = "timeout";
}
/** The approval does not cover these arguments, or it was already redeemed. */
export class ApprovalMismatch extends ActionBlocked {
    outcome = "mismatch";
}
