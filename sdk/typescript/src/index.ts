/**
 * Vigil SDK: report what an agent does and ask before it acts.
 * No runtime dependencies; Node ≥ 18 (global fetch).
 */
export { Vigil, VERSION } from "./client.js";
export type { Action, Decision, EventInput, GuardOptions, ToolOptions, VigilOptions } from "./client.js";
export type { BatchStats, VigilEvent } from "./batcher.js";
export { argumentsDigest, canonicalJson } from "./digest.js";
export { CircuitBreaker, parseRetryAfter } from "./transport.js";
export {
  ActionBlocked,
  APIError,
  ApprovalMismatch,
  ApprovalRejected,
  ApprovalTimeout,
  CircuitOpen,
  type ErrorDetail,
  VigilError,
  VigilUnavailable,
} from "./errors.js";
