/**
 * Guard tools of the OpenAI Agents SDK for JavaScript (`@openai/agents`).
 * Works on any FunctionTool-shaped object (`name` and
 * `invoke(runContext, input)`), so this module imports nothing from it:
 *
 *     import { guardTools } from "vigil-sdk/adapters/openai-agents";
 *     const agent = new Agent({ name: "support", tools: guardTools(vigil, [refundTool]) });
 */
import type { Vigil } from "../client.js";
import { ActionBlocked, VigilUnavailable } from "../errors.js";

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
export function guardTool<T extends InvokableTool>(vigil: Vigil, tool: T, o: AgentsGuardOptions = {}): T {
  const invoke = tool.invoke.bind(tool);
  const guarded = async (runContext: unknown, input: string, ...rest: unknown[]): Promise<unknown> => {
    let args: unknown;
    try {
      args = input ? JSON.parse(input) : {};
    } catch {
      args = { input };
    }
    if (args === null || typeof args !== "object" || Array.isArray(args)) args = { input: args };
    try {
      await vigil.guard({ kind: "tool_call", tool: tool.name }, { arguments: args as Record<string, unknown>, failOpen: o.failOpen });
    } catch (e) {
      if (o.throwOnBlock || !(e instanceof ActionBlocked || e instanceof VigilUnavailable)) throw e;
      const codes = e instanceof ActionBlocked && e.reasonCodes.length > 0 ? e.reasonCodes.join(", ") : e.name;
      return `The tool ${tool.name} was not run: Vigil refused it (${codes}).`;
    }
    return invoke(runContext, input, ...rest);
  };
  return Object.assign(Object.create(Object.getPrototypeOf(tool)), tool, { invoke: guarded }) as T;
}

/** guardTool over every tool of a list (tools without invoke pass unchanged). */
export function guardTools<T>(vigil: Vigil, tools: T[], o: AgentsGuardOptions = {}): T[] {
  return tools.map((t) => (t && typeof (t as unknown as InvokableTool).invoke === "function" ? (guardTool(vigil, t as unknown as InvokableTool, o) as unknown as T) : t));
}
