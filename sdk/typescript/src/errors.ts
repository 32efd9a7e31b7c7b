/** Every error the SDK throws derives from VigilError. */
export class VigilError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** One entry of the error envelope's `details`. */
export interface ErrorDetail {
  path?: string;
  code?: string;
  message?: string;
}

/** An error answer of the Vigil API, decoded from its envelope. */
export class APIError extends VigilError {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly apiMessage: string,
    readonly details: ErrorDetail[] = [],
    readonly requestId = "",
    /** Seconds from `Retry-After`, when the answer had one. */
    readonly retryAfter?: number,
  ) {
    super(`vigil: HTTP ${status} ${code}: ${apiMessage}`);
  }

  /** The first `details[].code` (`not_approved`, `arguments_mismatch`…), or "". */
  get detailCode(): string {
    return this.details.find((d) => typeof d.code === "string")?.code ?? "";
  }
}

/** Vigil gave no usable answer: transport failure, 5xx or 429 after every retry. */
export class VigilUnavailable extends VigilError {}

/** The circuit breaker is open: recent calls failed, so this one was not sent. */
export class CircuitOpen extends VigilUnavailable {}

/** The action must not run. `outcome` is "block" for a policy block. */
export class ActionBlocked extends VigilError {
  readonly outcome: string = "block";
  readonly decisionId: string;
  readonly reasonCodes: string[];
  readonly decision: Record<string, unknown>;
  constructor(message: string, init: { decisionId?: string; reasonCodes?: string[]; decision?: Record<string, unknown>; cause?: unknown } = {}) {
    super(message, { cause: init.cause });
    this.decisionId = init.decisionId ?? "";
    this.reasonCodes = init.reasonCodes ?? [];
    this.decision = init.decision ?? {};
  }
}

/** A person (or an expiry) rejected the action held for approval. */
export class ApprovalRejected extends ActionBlocked {
  override readonly outcome = "rejected";
}

/** Nobody decided within the SDK's approval wait; the action did not run. */
export class ApprovalTimeout extends ActionBlocked {
  override readonly outcome = "timeout";
}

/** The approval does not cover these arguments, or it was already redeemed. */
export class ApprovalMismatch extends ActionBlocked {
  override readonly outcome = "mismatch";
}
