"""Typed errors raised by the Vigil SDK.

Every error derives from :class:`VigilError`. A guarded action that must not
run raises :class:`ActionBlocked` (or one of its subclasses); Vigil being
unreachable raises :class:`VigilUnavailable` unless the call site chose to
fail open.
"""

from __future__ import annotations

from typing import Any, List, Mapping, Optional, Sequence


class VigilError(Exception):
    """Base class of every error the SDK raises."""


class APIError(VigilError):
    """An error answer of the Vigil API, decoded from its envelope."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Optional[Sequence[Mapping[str, Any]]] = None,
        request_id: str = "",
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(f"vigil: HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details: List[Mapping[str, Any]] = list(details or [])
        self.request_id = request_id
        self.retry_after = retry_after

    @property
    def detail_code(self) -> str:
        """The first ``details[].code`` (``not_approved``, ``arguments_mismatch``…), or ``""``."""
        for d in self.details:
            code = d.get("code")
            if isinstance(code, str):
                return code
        return ""


class VigilUnavailable(VigilError):
    """Vigil gave no usable answer: transport failure, 5xx or 429 after every retry."""

    def __init__(self, message: str, cause: Optional[BaseException] = None) -> None:
        super().__init__(message)
        self.__cause__ = cause


class CircuitOpen(VigilUnavailable):
    """The circuit breaker is open: recent calls failed, so this one was not sent."""


class ActionBlocked(VigilError):
    """The action must not run. ``outcome`` is ``block`` for a policy block."""

    outcome = "block"

    def __init__(self, message: str, *, decision_id: str = "", reason_codes: Sequence[str] = (), decision: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__(message)
        self.decision_id = decision_id
        self.reason_codes: List[str] = list(reason_codes)
        self.decision: Mapping[str, Any] = decision or {}


class ApprovalRejected(ActionBlocked):
    """A person (or an expiry) rejected the action held for approval."""

    outcome = "rejected"


class ApprovalTimeout(ActionBlocked):
    """Nobody decided within the SDK's approval wait; the action did not run."""

    outcome = "timeout"


class ApprovalMismatch(ActionBlocked):
    """The approval does not cover these arguments, or it was already redeemed."""

    outcome = "mismatch"
