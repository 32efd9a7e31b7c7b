"""A LangChain callback handler that guards tool calls and reports them.

``langchain_core`` is imported only when a handler is made, and only to
subclass its ``BaseCallbackHandler`` when it is installed::

    from vigil.adapters.langchain import VigilCallbackHandler
    agent.invoke({"input": "..."}, config={"callbacks": [VigilCallbackHandler(vigil)]})

``raise_error`` is set, so LangChain lets the guard's typed error stop a
tool Vigil refused instead of logging it and running the tool anyway.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Mapping, Optional
from uuid import UUID

from ..client import Decision, Vigil


def _base() -> type:
    try:
        from langchain_core.callbacks import BaseCallbackHandler  # type: ignore  # optional: absent unless installed
    except ImportError:  # LangChain not installed: the duck-typed handler still works in tests
        return object
    return BaseCallbackHandler  # type: ignore


class _Handler:
    raise_error = True
    run_inline = True
    ignore_llm = True
    ignore_chain = True
    ignore_agent = True
    ignore_retriever = True
    ignore_chat_model = True
    ignore_retry = True
    ignore_custom_event = True

    def __init__(self, vigil: Vigil, *, fail_open: Optional[bool] = None, report: bool = True) -> None:
        self.vigil = vigil
        self.fail_open = fail_open
        self.report = report
        self._runs: Dict[UUID, Any] = {}

    def on_tool_start(self, serialized: Optional[Mapping[str, Any]], input_str: str, *, run_id: UUID, inputs: Optional[Mapping[str, Any]] = None, **kw: Any) -> None:
        name = str((serialized or {}).get("name") or kw.get("name") or "tool")
        args: Dict[str, Any]
        if inputs is not None:
            args = dict(inputs)
        else:
            try:
                parsed = json.loads(input_str)
            except (TypeError, ValueError):
                parsed = input_str
            args = parsed if isinstance(parsed, dict) else {"input": parsed}
        d = self.vigil.guard({"kind": "tool_call", "tool": name}, arguments=args, fail_open=self.fail_open)
        self._runs[run_id] = (name, d)

    def _done(self, run_id: UUID, status: str, extra: Dict[str, Any]) -> None:
        name, d = self._runs.pop(run_id, ("tool", Decision("allow")))
        if self.report:
            self.vigil.report({"category": "tool_api", "payload": {"toolName": name, "decisionId": d.decision_id, "outcome": d.outcome, "status": status, **extra}})

    def on_tool_end(self, output: Any, *, run_id: UUID, **kw: Any) -> None:
        self._done(run_id, "ok", {})

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kw: Any) -> None:
        self._done(run_id, "error", {"error": type(error).__name__})


_cls: Optional[type] = None


def VigilCallbackHandler(vigil: Vigil, *, fail_open: Optional[bool] = None, report: bool = True) -> Any:
    """Make a handler (a ``BaseCallbackHandler`` when LangChain is installed)."""
    global _cls
    if _cls is None:
        base = _base()
        _cls = _Handler if base is object else type("VigilCallbackHandler", (_Handler, base), {})
    return _cls(vigil, fail_open=fail_open, report=report)
