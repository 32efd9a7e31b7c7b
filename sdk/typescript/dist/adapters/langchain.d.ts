/**
 * A LangChain.js callback handler that guards tool calls and reports them.
 * A plain handler object (LangChain accepts those), so this module imports
 * nothing from LangChain:
 *
 *     import { vigilCallbackHandler } from "vigil-sdk/adapters/langchain";
 *     await executor.invoke({ input }, { callbacks: [vigilCallbackHandler(vigil)] });
 *
 * `raiseError` and `awaitHandlers` are set, so LangChain waits for the
 * guard and lets its typed error stop a tool Vigil refused.
 */
import type { Vigil } from "../client.js";
export interface LangChainHandlerOptions {
    failOpen?: boolean;
    /** Report each tool's end or error as a tool_api event (default true). */
    report?: boolean;
}
export interface VigilCallbackHandler {
    name: string;
    raiseError: boolean;
    awaitHandlers: boolean;
    handleToolStart(tool: {
        name?: string;
        id?: string[];
    } | undefined, input: string, runId: string, parentRunId?: string, tags?: string[], metadata?: Record<string, unknown>, runName?: string): Promise<void>;
    handleToolEnd(output: unknown, runId: string): Promise<void>;
    handleToolError(error: unknown, runId: string): Promise<void>;
}
export declare function vigilCallbackHandler(vigil: Vigil, o?: LangChainHandlerOptions): VigilCallbackHandler;
