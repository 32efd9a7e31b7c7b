/** Every error the SDK throws derives from VigilError. */
export declare class VigilError extends Error {
    constructor(message: string, options?: {
        cause?: unknown;
    });
}
/** One entry of the error envelope's `details`. */
export interface ErrorDetail {
    path?: string;
    code?: string;
    message?: string;
}
/** An error answer of the Vigil API, decoded from its envelope. */
export declare class APIError extends VigilError {
    readonly status: number;
    readonly code: string;
    readonly apiMessage: string;
    readonly details: ErrorDetail[];
    readonly requestId: string;
    /** Seconds from `Retry-After`, when the answer had one. */
    readonly retryAfter?: number | undefined;
    constructor(status: number, code: string, apiMessage: string, details?: ErrorDetail[], requestId?: string, 
    /** Seconds from `Retry-After`, when the answer had one. */
    retryAfter?: number | undefined);
    /** The first `details[].code` (`not_approved`, `arguments_mismatch`…), or "". */
    get detailCode(): string;
}
/** Vigil gave no usable answer: transport failure, 5xx or 429 after every retry. */
export declare class VigilUnavailable extends VigilError {
}
/** The circuit breaker is open: recent calls failed, so this one was not sent. */
export declare class CircuitOpen extends VigilUnavailable {
}
/** The action must not run. `outcome` is "block" for a policy block. */
export declare class ActionBlocked extends VigilError {
    readonly outcome: string;
    readonly decisionId: string;
    readonly reasonCodes: string[];
    readonly decision: Record<string, unknown>;
    constructor(message: string, init?: {
        decisionId?: string;
        reasonCodes?: string[];
        decision?: Record<string, unknown>;
        cause?: unknown;
    });
}
/** A person (or an expiry) rejected the action held for approval. */
export declare class ApprovalRejected extends ActionBlocked {
    readonly outcome = "rejected";
}
/** Nobody decided within the SDK's approval wait; the action did not run. */
export declare class ApprovalTimeout extends ActionBlocked {
    readonly outcome = "timeout";
}
/** The approval does not cover these arguments, or it was already redeemed. */
export declare class ApprovalMismatch extends ActionBlocked {
    readonly outcome = "mismatch";
}
