"""The Vigil client: report events, guard actions, wrap tools."""

from __future__ import annotations

import asyncio
import datetime as _dt
import functools
import inspect
import logging
import time
import uuid
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, TypeVar, Union, cast, overload

from ._batcher import Batcher
from ._transport import CircuitBreaker, Transport
from .digest import arguments_digest
from .errors import (
    ActionBlocked,
    APIError,
    ApprovalMismatch,
    ApprovalRejected,
    ApprovalTimeout,
    CircuitOpen,
    VigilError,
    VigilUnavailable,
)

__version__ = "0.1.0"
log = logging.getLogger("vigil")

F = TypeVar("F", bound=Callable[..., Any])

#: The longest wait one long-poll asks for (the API's maximum is 60 s).
LONG_POLL = 30.0


@dataclass
class Decision:
    """What Vigil decided about an action the SDK let run.

    ``outcome`` is ``allow`` or ``warn`` (the action may run), or
    ``require_approval`` once a person approved it (``approved``; and
    ``redeemed`` once redeemed for the arguments about to run).
    ``failed_open`` is True when Vigil was not asked because the circuit
    breaker was open and the call site fails open; ``outcome`` is then "".
    """

    outcome: str
    decision_id: str = ""
    reason_codes: List[str] = field(default_factory=list)
    approved: bool = False
    approved_by: List[str] = field(default_factory=list)
    redeemed: bool = False
    failed_open: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Vigil:
    """A client of one Vigil deployment, for one agent.

    >>> vigil = Vigil("http://localhost:8080", api_key, agent_id="refund-bot")
    >>> @vigil.tool
    ... def execute_refund(order: str, amount: float) -> str: ...

    Thread-safe. Reported events are sent from a background thread; call
    :meth:`close` (or use the client as a context manager) to flush them.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        agent_id: Optional[str] = None,
        session_id: Optional[str] = None,
        tenant: Optional[str] = None,
        timeout: float = 10.0,
        max_retries: int = 3,
        backoff_base: float = 0.2,
        backoff_max: float = 5.0,
        retry_after_max: float = 30.0,
        breaker_threshold: int = 5,
        breaker_cooldown: float = 30.0,
        fail_open: bool = False,
        approval_timeout: float = 300.0,
        batch_size: int = 100,
        linger: float = 0.5,
        max_queue: int = 10000,
        framework: Optional[str] = None,
        agent_version: Optional[str] = None,
        on_error: Optional[Callable[[Mapping[str, Any], BaseException], None]] = None,
    ) -> None:
        if not base_url or not api_key:
            raise ValueError("base_url and api_key are required")
        headers = {"x-vigil-sdk": f"vigil-python/{__version__}", "User-Agent": f"vigil-python/{__version__}"}
        if tenant:
            headers["x-tenant-id"] = tenant
        if framework:
            headers["x-vigil-framework"] = framework
        if agent_version:
            headers["x-vigil-agent-version"] = agent_version
        self.breaker = CircuitBreaker(breaker_threshold, breaker_cooldown)
        self._http = Transport(
            base_url, api_key, timeout=timeout, max_retries=max_retries, backoff_base=backoff_base,
            backoff_max=backoff_max, retry_after_max=retry_after_max, breaker=self.breaker, headers=headers,
        )
        self.agent_id = agent_id
        self.session_id = session_id or f"ses-{uuid.uuid4()}"
        self.fail_open = fail_open
        self.approval_timeout = approval_timeout
        self._batcher = Batcher(self._send_batch, batch_size=batch_size, linger=linger, max_queue=max_queue, on_error=on_error)

    # -- lifecycle -----------------------------------------------------

    def __enter__(self) -> "Vigil":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def flush(self, timeout: Optional[float] = 10.0) -> bool:
        """Send every queued event now; True when they all left in time."""
        return self._batcher.flush(timeout)

    def close(self, timeout: Optional[float] = 10.0) -> bool:
        """Flush queued events (up to ``timeout`` seconds) and stop the sender."""
        return self._batcher.close(timeout)

    @property
    def stats(self) -> Dict[str, int]:
        """Counters of reported events: queued, sent, duplicates, rejected, dropped, retried."""
        return dict(self._batcher.stats)

    # -- report --------------------------------------------------------

    def event(self, event: Mapping[str, Any]) -> Dict[str, Any]:
        """Complete an event with the client's defaults (id, agent, session, time, schema)."""
        ev = dict(event)
        if "category" not in ev:
            raise ValueError("an event needs a category (such as tool_api)")
        ev.setdefault("eventId", str(uuid.uuid4()))
        if self.agent_id and not ev.get("agentId"):
            ev["agentId"] = self.agent_id
        ev.setdefault("sessionId", self.session_id)
        ev.setdefault("sourceTimestamp", _now())
        ev.setdefault("schemaVersion", "1.0")
        ev.setdefault("payload", {})
        return ev

    def report(self, event: Mapping[str, Any]) -> bool:
        """Queue an event for the background sender; never blocks.

        Missing fields are filled in (:meth:`event`). Returns False when the
        buffer is full and the event was dropped (counted in :attr:`stats`).
        """
        return self._batcher.add(self.event(event))

    def report_now(self, event: Mapping[str, Any]) -> Mapping[str, Any]:
        """Send one event synchronously (``POST /v1/events``); returns the answer."""
        ev = self.event(event)
        return cast(Mapping[str, Any], self._http.request("POST", "/v1/events", ev, idempotency_key=ev["eventId"]).body or {})

    def _send_batch(self, events: List[Dict[str, Any]], key: str) -> Any:
        return self._http.request("POST", "/v1/events/batch", {"events": events}, idempotency_key=key).body

    # -- guard ---------------------------------------------------------

    def evaluate(
        self,
        action: Union[str, Mapping[str, Any]],
        *,
        arguments: Optional[Mapping[str, Any]] = None,
        context: Optional[Mapping[str, Any]] = None,
        session_id: Optional[str] = None,
        idempotency_key: Optional[str] = None,
    ) -> Mapping[str, Any]:
        """Ask ``POST /v1/decisions.evaluate`` and return its answer as is."""
        body: Dict[str, Any] = {"action": _action(action, arguments), "context": dict(context or {}), "sessionId": session_id or self.session_id}
        if self.agent_id:
            body["agentId"] = self.agent_id
        res = self._http.request("POST", "/v1/decisions.evaluate", body, idempotency_key=idempotency_key or str(uuid.uuid4()))
        if not isinstance(res.body, dict) or not res.body.get("decision"):
            raise VigilUnavailable("vigil: decision answer without a decision")
        return res.body

    def ask(
        self,
        action: Union[str, Mapping[str, Any]],
        *,
        arguments: Optional[Mapping[str, Any]] = None,
        context: Optional[Mapping[str, Any]] = None,
        session_id: Optional[str] = None,
        fail_open: Optional[bool] = None,
        approval_timeout: Optional[float] = None,
    ) -> Decision:
        """:meth:`guard` without the redemption.

        For ``require_approval`` it returns once a person approved, and the
        caller must :meth:`redeem` the decision with the arguments it is
        about to run, just before running them.
        """
        fo = self.fail_open if fail_open is None else fail_open
        try:
            d = self.evaluate(action, arguments=arguments, context=context, session_id=session_id)
        except CircuitOpen:
            if fo:
                log.warning("vigil: breaker open, failing open for %s", _name(action))
                return Decision("", failed_open=True)
            raise
        outcome = str(d.get("decision"))
        codes = [str(c) for c in d.get("reasonCodes") or []]
        did = str(d.get("decisionId") or "")
        if outcome in ("allow", "warn"):
            return Decision(outcome, did, codes, raw=d)
        if outcome == "require_approval":
            return self._await_approval(did, codes, d, approval_timeout or self.approval_timeout)
        # block, or an outcome this SDK does not know: neither is a permission.
        raise ActionBlocked(f"vigil: {_name(action)} blocked ({', '.join(codes) or outcome})", decision_id=did, reason_codes=codes, decision=d)

    def guard(
        self,
        action: Union[str, Mapping[str, Any]],
        *,
        arguments: Optional[Mapping[str, Any]] = None,
        context: Optional[Mapping[str, Any]] = None,
        session_id: Optional[str] = None,
        fail_open: Optional[bool] = None,
        approval_timeout: Optional[float] = None,
    ) -> Decision:
        """Ask Vigil before running an action; return only if it may run.

        ``action`` is a tool name or an action object (``kind``, ``tool``,
        ``target``…); ``arguments`` are the tool arguments about to run.
        ``allow`` and ``warn`` return at once. ``block`` raises
        :class:`ActionBlocked` with the reason codes. ``require_approval``
        waits (at most ``approval_timeout`` seconds) for a person: approved,
        the approval is redeemed for exactly these arguments and the call
        returns; rejected, expired or not decided in time, it raises.
        Vigil unreachable raises :class:`VigilUnavailable`; while the
        circuit breaker is open, :class:`CircuitOpen` — unless ``fail_open``
        (per call, else the client's) lets the action run with
        ``Decision(failed_open=True)``.
        """
        d = self.ask(action, arguments=arguments, context=context, session_id=session_id, fail_open=fail_open, approval_timeout=approval_timeout)
        return self.redeem(d, arguments)

    def redeem(self, decision: Decision, arguments: Optional[Mapping[str, Any]]) -> Decision:
        """Redeem an approved decision for the arguments about to run.

        Raises :class:`ApprovalMismatch` when the approval was for other
        arguments (checked here against its ``argumentsDigest``, then by
        Vigil) or was already redeemed. Decisions that needed no approval
        are returned unchanged.
        """
        if decision.outcome != "require_approval" or decision.redeemed:
            return decision
        did, codes, d = decision.decision_id, decision.reason_codes, decision.raw
        want = (d.get("approval") or {}).get("argumentsDigest")
        have = arguments_digest(arguments)
        if want and want != have:
            raise ApprovalMismatch(f"vigil: {did} was approved for other arguments ({want}, these are {have})", decision_id=did, reason_codes=codes, decision=d)
        path = "/v1/decisions/" + urllib.parse.quote(did, safe="") + "/redeem"
        try:
            self._http.request("POST", path, {"arguments": dict(arguments or {})}, idempotency_key=str(uuid.uuid4()))
        except APIError as e:
            raise ApprovalMismatch(f"vigil: redeeming {did} refused ({e.detail_code or e.code}): {e.message}", decision_id=did, reason_codes=codes, decision=d) from e
        except VigilUnavailable as e:
            raise ApprovalTimeout(f"vigil: could not redeem {did}: {e}", decision_id=did, reason_codes=codes, decision=d) from e
        decision.redeemed = True
        return decision

    def _await_approval(self, did: str, codes: List[str], first: Mapping[str, Any], limit: float) -> Decision:
        deadline = time.monotonic() + limit
        path = "/v1/decisions/" + urllib.parse.quote(did, safe="")
        d: Mapping[str, Any] = first
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ApprovalTimeout(f"vigil: no decision on {did} within {limit:g}s; the action did not run", decision_id=did, reason_codes=codes, decision=d)
            wait = max(1, int(min(LONG_POLL, left)))
            try:
                res = self._http.request("GET", f"{path}?wait={wait}s", timeout=wait + 10, deadline=deadline)
            except VigilUnavailable as e:
                # Fail closed: an approval that cannot be read is no approval.
                raise ApprovalTimeout(f"vigil: could not read the decision on {did}: {e}", decision_id=did, reason_codes=codes, decision=d) from e
            if isinstance(res.body, dict):
                d = res.body
            if d.get("final"):
                break
        by = [str(x) for x in (d.get("approvalProgress") or {}).get("approvedBy") or []]
        if d.get("outcome") != "approved":
            raise ApprovalRejected(f"vigil: {did} was {d.get('outcome') or 'not approved'}", decision_id=did, reason_codes=codes, decision=d)
        return Decision("require_approval", did, codes, approved=True, approved_by=by, raw=d)

    # -- wrappers ------------------------------------------------------

    @overload
    def tool(self, fn: F) -> F: ...

    @overload
    def tool(self, fn: None = None, *, name: Optional[str] = None, kind: str = "tool_call", fail_open: Optional[bool] = None, report: bool = True) -> Callable[[F], F]: ...

    def tool(self, fn: Optional[F] = None, *, name: Optional[str] = None, kind: str = "tool_call", fail_open: Optional[bool] = None, report: bool = True) -> Any:
        """Decorate a tool function so every call is guarded first.

        The call's arguments (bound to parameter names) are the action's
        ``arguments``; ``name`` defaults to the function's name. With
        ``report`` the outcome of the call is reported as a ``tool_api``
        event. Works on plain and ``async`` functions.
        """

        def wrap(f: F) -> F:
            tool_name = name or str(getattr(f, "__name__", "tool"))
            sig = _signature(f)

            def args_of(a: Any, kw: Any) -> Dict[str, Any]:
                if sig is None:
                    return {"args": list(a), **kw} if a else dict(kw)
                bound = sig.bind_partial(*a, **kw)
                return cast(Dict[str, Any], _jsonable(dict(bound.arguments)))

            if inspect.iscoroutinefunction(f):

                @functools.wraps(f)
                async def aw(*a: Any, **kw: Any) -> Any:
                    args = args_of(a, kw)
                    d = await asyncio.get_running_loop().run_in_executor(
                        None, functools.partial(self.guard, {"kind": kind, "tool": tool_name}, arguments=args, fail_open=fail_open))
                    return await self._run_reported(tool_name, args, d, report, f, a, kw)

                return cast(F, aw)

            @functools.wraps(f)
            def w(*a: Any, **kw: Any) -> Any:
                args = args_of(a, kw)
                d = self.guard({"kind": kind, "tool": tool_name}, arguments=args, fail_open=fail_open)
                return self._run_reported_sync(tool_name, args, d, report, f, a, kw)

            return cast(F, w)

        return wrap(fn) if fn is not None else wrap

    wrap = tool

    def _tool_event(self, tool: str, args: Mapping[str, Any], d: Decision, error: Optional[BaseException]) -> Dict[str, Any]:
        payload: Dict[str, Any] = {"toolName": tool, "argumentsHash": arguments_digest(args) if _safe_digest(args) else "", "decisionId": d.decision_id, "outcome": d.outcome, "status": "error" if error else "ok"}
        if error is not None:
            payload["error"] = type(error).__name__
        return {"category": "tool_api", "payload": payload}

    def _reported(self, tool: str, args: Mapping[str, Any], d: Decision, report: bool, error: Optional[BaseException]) -> None:
        if report:
            self.report(self._tool_event(tool, args, d, error))

    def _run_reported_sync(self, tool: str, args: Mapping[str, Any], d: Decision, report: bool, f: Callable[..., Any], a: Any, kw: Any) -> Any:
        try:
            out = f(*a, **kw)
        except BaseException as e:
            self._reported(tool, args, d, report, e)
            raise
        self._reported(tool, args, d, report, None)
        return out

    async def _run_reported(self, tool: str, args: Mapping[str, Any], d: Decision, report: bool, f: Callable[..., Any], a: Any, kw: Any) -> Any:
        try:
            out = await f(*a, **kw)
        except BaseException as e:
            self._reported(tool, args, d, report, e)
            raise
        self._reported(tool, args, d, report, None)
        return out


def _action(action: Union[str, Mapping[str, Any]], arguments: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    act: Dict[str, Any] = {"kind": "tool_call", "tool": action} if isinstance(action, str) else dict(action)
    if arguments is not None:
        act["arguments"] = dict(arguments)
    return act


def _name(action: Union[str, Mapping[str, Any]]) -> str:
    return action if isinstance(action, str) else str(action.get("tool") or action.get("target") or action.get("kind") or "action")


def _signature(f: Callable[..., Any]) -> Optional[inspect.Signature]:
    try:
        return inspect.signature(f)
    except (TypeError, ValueError):
        return None


def _jsonable(v: Any) -> Any:
    """Tool arguments as JSON values; what JSON cannot carry becomes its repr."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [_jsonable(x) for x in v]
    return repr(v)


def _safe_digest(args: Mapping[str, Any]) -> bool:
    try:
        arguments_digest(args)
        return True
    except (TypeError, ValueError):
        return False


__all__ = ["Vigil", "Decision", "VigilError"]
