"""Guard tools of the OpenAI Agents SDK (``openai-agents``) with Vigil.

Works on any ``FunctionTool``-shaped object (``name`` and an async
``on_invoke_tool(ctx, input_json)``), so importing this module does not
import the Agents SDK::

    from agents import Agent
    from vigil.adapters.openai_agents import guard_tools
    agent = Agent(name="support", tools=guard_tools(vigil, [execute_refund]))
"""

from __future__ import annotations

import asyncio
import copy
import functools
import json
from typing import Any, Awaitable, Callable, List, Optional, Sequence, TypeVar

from ..client import Vigil
from ..errors import ActionBlocked, VigilUnavailable

T = TypeVar("T")


def guard_tool(vigil: Vigil, tool: T, *, fail_open: Optional[bool] = None, raise_on_block: bool = False) -> T:
    """A copy of ``tool`` whose every invocation is guarded by Vigil first.

    The model's JSON input is the action's ``arguments``. A blocked,
    rejected or unapproved call does not run: the model is told why (the
    reason codes) unless ``raise_on_block``, which raises the SDK's typed
    error out of the agent run instead.
    """
    invoke: Callable[[Any, str], Awaitable[Any]] = getattr(tool, "on_invoke_tool")
    name = str(getattr(tool, "name", "tool"))

    @functools.wraps(invoke)
    async def guarded(ctx: Any, input_json: str) -> Any:
        try:
            args = json.loads(input_json) if input_json else {}
        except ValueError:
            args = {"input": input_json}
        if not isinstance(args, dict):
            args = {"input": args}
        try:
            await asyncio.get_running_loop().run_in_executor(
                None, functools.partial(vigil.guard, {"kind": "tool_call", "tool": name}, arguments=args, fail_open=fail_open))
        except (ActionBlocked, VigilUnavailable) as e:
            if raise_on_block:
                raise
            codes = ", ".join(getattr(e, "reason_codes", []) or []) or type(e).__name__
            return f"The tool {name} was not run: Vigil refused it ({codes})."
        return await invoke(ctx, input_json)

    out = copy.copy(tool)
    setattr(out, "on_invoke_tool", guarded)
    return out


def guard_tools(vigil: Vigil, tools: Sequence[T], **kw: Any) -> List[T]:
    """:func:`guard_tool` over every tool of a list (other tool kinds pass unchanged)."""
    return [guard_tool(vigil, t, **kw) if callable(getattr(t, "on_invoke_tool", None)) else t for t in tools]
