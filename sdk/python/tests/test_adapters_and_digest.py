"""Framework adapters (without the frameworks) and the arguments digest."""

import asyncio
import json
import os
import subprocess
import sys
import uuid

import pytest

from vigil import ActionBlocked, arguments_digest, canonical_json

VECTORS = os.path.join(os.path.dirname(__file__), "..", "..", "testdata", "digest_vectors.json")


def test_digest_matches_vigils_go_encoding():
    # Vectors made by Go's encoding/json (decode into map[string]any, encode), as the server does.
    for v in json.load(open(VECTORS, encoding="utf-8")):
        args = json.loads(v["json"])
        assert canonical_json(args) == v["canonical"]
        assert arguments_digest(args) == v["digest"]
    assert arguments_digest(None) == arguments_digest({})


def test_digest_refuses_what_json_cannot_carry():
    with pytest.raises(ValueError):
        arguments_digest({"x": float("nan")})
    with pytest.raises(TypeError):
        arguments_digest({"x": object()})


def test_adapters_do_not_import_their_frameworks():
    code = "import sys, vigil.adapters.openai_agents, vigil.adapters.langchain; print(any(m.split('.')[0] in ('agents', 'langchain_core', 'langchain') for m in sys.modules))"
    src = os.path.join(os.path.dirname(__file__), "..", "src")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": src}, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


class FakeFunctionTool:
    """The shape of agents.FunctionTool the adapter relies on."""

    def __init__(self):
        self.name = "execute_refund"
        self.ran = []

        async def invoke(ctx, input_json):
            self.ran.append(json.loads(input_json))
            return "refunded"

        self.on_invoke_tool = invoke


def test_openai_agents_tool_guard(server, client):
    from vigil.adapters.openai_agents import guard_tools

    server.on("POST", "/v1/decisions.evaluate", (200, {}, {"decision": "allow", "decisionId": "d"}),
              (200, {}, {"decision": "block", "decisionId": "d2", "reasonCodes": ["TOO_BIG"]}))
    tool = FakeFunctionTool()
    (g,) = guard_tools(client(), [tool])
    assert asyncio.run(g.on_invoke_tool(None, '{"amount": 5}')) == "refunded"
    msg = asyncio.run(g.on_invoke_tool(None, '{"amount": 5000}'))
    assert "TOO_BIG" in msg and tool.ran == [{"amount": 5}]
    assert server.calls("/v1/decisions.evaluate")[1]["body"]["action"] == {"kind": "tool_call", "tool": "execute_refund", "arguments": {"amount": 5000}}


def test_langchain_handler_guards_and_reports(server, client):
    from vigil.adapters.langchain import VigilCallbackHandler

    server.on("POST", "/v1/decisions.evaluate", (200, {}, {"decision": "allow", "decisionId": "d"}),
              (200, {}, {"decision": "block", "decisionId": "d2", "reasonCodes": ["NO"]}))
    server.on("POST", "/v1/events/batch", (202, {}, {"results": []}))
    c = client()
    h = VigilCallbackHandler(c)
    assert h.raise_error, "LangChain must let the refusal stop the tool"
    run = uuid.uuid4()
    h.on_tool_start({"name": "search"}, '{"q": "x"}', run_id=run)
    h.on_tool_end("out", run_id=run)
    with pytest.raises(ActionBlocked):
        h.on_tool_start({"name": "rm"}, "/", run_id=uuid.uuid4(), inputs={"path": "/"})
    assert [r["body"]["action"]["arguments"] for r in server.calls("/v1/decisions.evaluate")] == [{"q": "x"}, {"path": "/"}]
    assert c.flush(5)
    (b,) = server.calls("/v1/events/batch")
    assert b["body"]["events"][0]["payload"]["toolName"] == "search"
