/**
 * Guard tools of the OpenAI Agents SDK for JavaScript (`@openai/agents`).
 * Works on any FunctionTool-shaped object (`name` and
 * `invoke(runContext, input)`), so this module imports nothing from it:
 *
 *     import { guardTools } from "vigil-sdk/adapters/openai-agents";
 *     const agent = new Agent({ name: "support", tools: guardTools(vigil, [refundTool]) });
 */
import type { Vigil } from "../client.js";
/** The part of an Agents SDK FunctionTool the guard relies on. */
export interface InvokableTool {
    name: string;
    invoke: (runContext: unknown, input: string, ...rest: unknown[]) => Promise<unknown>;
}
export interface AgentsGuardOptions {
    failOpen?: boolean;
    /** Throw the SDK's typed error out of the run instead of telling the model (default false). */
    throwOnBlock?: boolean;
}
/**
 * A copy of the tool whose every invocation is guarded by Vigil first. The
 * model's JSON input is the action's `arguments`. A blocked, rejected or
 * unapproved call does not run; the model is told why (the reason codes).
 */
export declare function guardTool<T extends InvokableTool>(vigil: Vigil, tool: T, o?: AgentsGuardOptions): T;
/** guardTool over every tool of a list (tools without invoke pass unchanged). */
export declare function guardTools<T>(vigil: Vigil, tools: T[], o?: AgentsGuardOptions): T[];
