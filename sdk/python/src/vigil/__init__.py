"""Vigil SDK: report what an agent does and ask before it acts.

Standard library only. See :class:`Vigil`.
"""

from .client import Decision, Vigil, __version__
from .digest import arguments_digest, canonical_json
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
from ._transport import CircuitBreaker

__all__ = [
    "Vigil", "Decision", "__version__", "arguments_digest", "canonical_json", "CircuitBreaker",
    "VigilError", "APIError", "VigilUnavailable", "CircuitOpen",
    "ActionBlocked", "ApprovalRejected", "ApprovalTimeout", "ApprovalMismatch",
]
