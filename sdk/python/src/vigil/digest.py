"""The arguments digest Vigil records on an approval.

Vigil computes ``sha256:`` over the canonical JSON of the tool arguments as
its server decodes and re-encodes them: object keys sorted, no whitespace,
numbers as IEEE-754 doubles in their shortest form (``1250``, ``0.5``,
``1e+21``, ``1e-7``), and ``<``, ``>``, ``&``, U+2028 and U+2029 escaped as
``\\u003c``… The SDK computes the same digest over the arguments it is about
to run, and runs them only when it equals the approved one.
"""

from __future__ import annotations

import hashlib
import json
import math
from decimal import Decimal
from typing import Any, Mapping, Optional

_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _string(s: str) -> str:
    out = json.dumps(s, ensure_ascii=False)
    for k, v in _ESCAPES.items():
        if k in out:
            out = out.replace(k, v)
    return out


def _number(x: float) -> str:
    if math.isnan(x) or math.isinf(x):
        raise ValueError("arguments hold a NaN or infinite number, which JSON cannot carry")
    if x == 0:
        return "-0" if math.copysign(1.0, x) < 0 else "0"
    sign, digits, exp = Decimal(repr(x)).as_tuple()
    ds = "".join(map(str, digits)).rstrip("0") or "0"
    # value = 0.d1d2… × 10^point
    point = len(digits) + int(exp)
    neg = "-" if sign else ""
    if 1e-6 <= abs(x) < 1e21:
        if point <= 0:
            return neg + "0." + "0" * (-point) + ds
        if point >= len(ds):
            return neg + ds + "0" * (point - len(ds))
        return neg + ds[:point] + "." + ds[point:]
    e = point - 1
    mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
    return f"{neg}{mant}e{'+' if e >= 0 else '-'}{abs(e):02d}" if e >= 0 else f"{neg}{mant}e-{abs(e)}"


def canonical_json(value: Any) -> str:
    """Encode value the way Vigil's server re-encodes decoded JSON."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (int, float)):
        return _number(float(value))
    if isinstance(value, Mapping):
        items = sorted((str(k), v) for k, v in value.items())
        return "{" + ",".join(_string(k) + ":" + canonical_json(v) for k, v in items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(canonical_json(v) for v in value) + "]"
    raise TypeError(f"arguments hold a {type(value).__name__}, which is not JSON")


def arguments_digest(arguments: Optional[Mapping[str, Any]]) -> str:
    """``sha256:<hex>`` over the canonical JSON of arguments (``None`` is ``{}``)."""
    body = canonical_json(dict(arguments or {}))
    return "sha256:" + hashlib.sha256(body.encode("utf-8")).hexdigest()
