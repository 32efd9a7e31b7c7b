export function vigilCallbackHandler(vigil, o = {}) {
    const runs = new Map();
    const done = (runId, status, extra) => {
        const r = runs.get(runId);
        runs.delete(runId);
        if (o.report === false)
            return;
        vigil.report({ category: "tool_api", payload: { toolName: r?.name ?? "tool", decisionId: r?.d?.decisionId ?? "", outcome: r?.d?.outcome ?? "", status, ...extra } });
    };
    return {
        name: "vigil",
        raiseError: true,
        awaitHandlers: true,
        async handleToolStart(tool, input, runId, _parent, _tags, _metadata, runName) {
            let args;
            try {
                args = JSON.parse(input);
            }
            catch {
                args = input;
            }
            // A tool called with a tool call (LangGraph's ToolNode, agents) logs the whole call as its
            // input: its name and args are what runs. Otherwise the name comes from the run or the tool.
            let name = runName ?? tool?.name ?? tool?.kwargs?.name ?? tool?.id?.[tool.id.length - 1] ?? "tool";
            const call = args;
            if (call && typeof call === "object" && call.type === "tool_call" && typeof call.name === "string") {
                name = call.name;
                args = call.args ?? {};
            }
            if (args === null || typeof args !== "object" || Array.isArray(args))
                args = { input: args };
            const d = await vigil.guard({ kind: "tool_call", tool: name }, { arguments: args, failOpen: o.failOpen });
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
