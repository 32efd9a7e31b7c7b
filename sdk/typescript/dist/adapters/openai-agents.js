import { ActionBlocked, VigilUnavailable } from "../errors.js";
/**
 * A copy of the tool whose every invocation is guarded by Vigil first. The
 * model's JSON input is the action's `arguments`. A blocked, rejected or
 * unapproved call does not run; the model is told why (the reason codes).
 */
export function guardTool(vigil, tool, o = {}) {
    const invoke = tool.invoke.bind(tool);
    const guarded = async (runContext, input, ...rest) => {
        let args;
        try {
            args = input ? JSON.parse(input) : {};
        }
        catch {
            args = { input };
        }
        if (args === null || typeof args !== "object" || Array.isArray(args))
            args = { input: args };
        try {
            await vigil.guard({ kind: "tool_call", tool: tool.name }, { arguments: args, failOpen: o.failOpen });
        }
        catch (e) {
            if (o.throwOnBlock || !(e instanceof ActionBlocked || e instanceof VigilUnavailable))
                throw e;
            const codes = e instanceof ActionBlocked && e.reasonCodes.length > 0 ? e.reasonCodes.join(", ") : e.name;
            return `The tool ${tool.name} was not run: Vigil refused it (${codes}).`;
        }
        return invoke(runContext, input, ...rest);
    };
    return Object.assign(Object.create(Object.getPrototypeOf(tool)), tool, { invoke: guarded });
}
/** guardTool over every tool of a list (tools without invoke pass unchanged). */
export function guardTools(vigil, tools, o = {}) {
    return tools.map((t) => (t && typeof t.invoke === "function" ? guardTool(vigil, t, o) : t));
}
