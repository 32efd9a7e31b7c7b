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
import type { Decision, Vigil } from "../client.js";

export interface LangChainHandlerOptions {
  failOpen?: boolean;
  /** Report each tool's end or error as a tool_api event (default true). */
  report?: boolean;
}

export interface VigilCallbackHandler {
  name: string;
  raiseError: boolean;
  awaitHandlers: boolean;
  handleToolStart(tool: { name?: string; id?: string[] } | undefined, input: string, runId: string, parentRunId?: string, tags?: string[], metadata?: Record<string, unknown>, runName?: string): Promise<void>;
  handleToolEnd(output: unknown, runId: string): Promise<void>;
  handleToolError(error: unknown, runId: string): Promise<void>;
}

export function vigilCallbackHandler(vigil: Vigil, o: LangChainHandlerOptions = {}): VigilCallbackHandler {
  const runs = new Map<string, { name: string; d: Decision | undefined }>();
  const done = (runId: string, status: string, extra: Record<string, unknown>) => {
    const r = runs.get(runId);
    runs.delete(runId);
    if (o.report === false) return;
    vigil.report({ category: "tool_api", payload: { toolName: r?.name ?? "tool", decisionId: r?.d?.decisionId ?? "", outcome: r?.d?.outcome ?? "", status, ...extra } });
  };
  return {
    name: "vigil",
    raiseError: true,
    awaitHandlers: true,
    async handleToolStart(tool, input, runId, _parent, _tags, _metadata, runName) {
      let args: unknown;
      try {
        args = JSON.parse(input);
      } catch {
        args = input;
      }
      // A tool called with a tool call (LangGraph's ToolNode, agents) logs the whole call as its
      // input: its name and args are what runs. Otherwise the name comes from the run or the tool.
      let name = runName ?? tool?.name ?? (tool as { kwargs?: { name?: string } } | undefined)?.kwargs?.name ?? tool?.id?.[tool.id.length - 1] ?? "tool";
      const call = args as { type?: string; name?: unknown; args?: unknown } | null;
      if (call && typeof call === "object" && call.type === "tool_call" && typeof call.name === "string") {
        name = call.name;
        args = call.args ?? {};
      }
      if (args === null || typeof args !== "object" || Array.isArray(args)) args = { input: args };
      const d = await vigil.guard({ kind: "tool_call", tool: name }, { arguments: args as Record<string, unknown>, failOpen: o.failOpen });
      runs.set(runId, { name, d });
    },
    async handleToolEnd(_output, runId) {
      done(runId, "ok", {});
    },
    async handleToolError(error, runId) {
      done(runId, "error", { error: error instanceof Error ? error.name : typeof error });
    },
  };
}
