"""HTTP to Vigil: JSON, retries with jittered backoff, and a circuit breaker."""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.request
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from .errors import APIError, CircuitOpen, VigilUnavailable

#: Statuses worth another try: throttled, or the server could not answer now.
RETRY_STATUSES = frozenset({429, 502, 503, 504})


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failed calls, for ``cooldown`` seconds.

    While open, calls fail at once (:class:`CircuitOpen`) instead of waiting
    on a Vigil that is down. After the cool-down one trial call is let
    through (half-open): its success closes the breaker, its failure opens
    it again.
    """

    def __init__(self, threshold: int = 5, cooldown: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = max(1, threshold)
        self.cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: Optional[float] = None
        self._trial = False

    @property
    def state(self) -> str:
        with self._lock:
            if self._opened_at is None:
                return "closed"
            if self._clock() - self._opened_at >= self.cooldown:
                return "half-open"
            return "open"

    def allow(self) -> bool:
        with self._lock:
            if self._opened_at is None:
                return True
            if self._clock() - self._opened_at < self.cooldown or self._trial:
                return False
            self._trial = True
            return True

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._trial = False

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._trial or self._failures >= self.threshold:
                self._opened_at = self._clock()
            self._trial = False


def parse_retry_after(value: Optional[str], now: Callable[[], float] = time.time) -> Optional[float]:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class Response:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: Mapping[str, str], body: Any) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class Transport:
    """Sends JSON requests to one Vigil base URL with the client's retry policy."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float,
        max_retries: int,
        backoff_base: float,
        backoff_max: float,
        retry_after_max: float,
        breaker: CircuitBreaker,
        headers: Mapping[str, str],
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.max_retries = max(0, max_retries)
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.retry_after_max = retry_after_max
        self.breaker = breaker
        self.headers = dict(headers)
        self.sleep = sleep
        self._rand = random.Random()

    def backoff(self, attempt: int, retry_after: Optional[float]) -> float:
        """Full jitter over an exponential ceiling; never shorter than Retry-After."""
        ceiling = min(self.backoff_max, self.backoff_base * (2 ** attempt))
        delay = self._rand.uniform(0, ceiling)
        if retry_after is not None:
            delay = min(self.retry_after_max, retry_after) + delay * 0.1
        return delay

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        idempotency_key: Optional[str] = None,
        timeout: Optional[float] = None,
        extra_headers: Optional[Mapping[str, str]] = None,
        deadline: Optional[float] = None,
        count_for_breaker: bool = True,
    ) -> Response:
        """One logical call: retried on 429/502/503/504 and transport errors.

        A non-retryable error answer raises :class:`APIError`; running out
        of tries raises :class:`VigilUnavailable`; an open breaker raises
        :class:`CircuitOpen` without sending anything.
        """
        if not self.breaker.allow():
            raise CircuitOpen(f"vigil: circuit open after repeated failures; {method} {path} not sent")
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode("utf-8")
        headers = {"Authorization": "Bearer " + self.api_key, "Accept": "application/json", **self.headers}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        if extra_headers:
            headers.update(extra_headers)
        last: Optional[BaseException] = None
        for attempt in range(self.max_retries + 1):
            retry_after: Optional[float] = None
            try:
                status, hdrs, raw = self._send(method, path, data, headers, timeout or self.timeout)
            except (urllib.error.URLError, OSError, TimeoutError) as e:  # connection refused, reset, timed out
                last = e
            else:
                if status < 400:
                    self.breaker.success()
                    return Response(status, hdrs, _decode(raw))
                err = _api_error(status, hdrs, raw)
                if status not in RETRY_STATUSES:
                    # A refusal is an answer: Vigil is up.
                    self.breaker.success()
                    raise err
                last, retry_after = err, err.retry_after
            if attempt == self.max_retries:
                break
            delay = self.backoff(attempt, retry_after)
            if deadline is not None and time.monotonic() + delay >= deadline:
                break
            self.sleep(delay)
        if count_for_breaker and not (isinstance(last, APIError) and last.status == 429):
            self.breaker.failure()
        if isinstance(last, APIError) and last.status == 429:
            raise VigilUnavailable(f"vigil: {method} {path} still throttled after {self.max_retries} retries: {last.message}", last)
        raise VigilUnavailable(f"vigil: {method} {path} failed after {self.max_retries} retries: {last}", last)

    def _send(self, method: str, path: str, data: Optional[bytes], headers: Dict[str, str], timeout: float) -> Tuple[int, Dict[str, str], bytes]:
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as res:
                return res.status, {k.lower(): v for k, v in res.headers.items()}, res.read()
        except urllib.error.HTTPError as e:
            with e:
                return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _api_error(status: int, headers: Mapping[str, str], raw: bytes) -> APIError:
    body = _decode(raw)
    code, message, details, request_id = "", raw[:200].decode("utf-8", "replace"), [], ""
    if isinstance(body, dict):
        env = body.get("error")
        if isinstance(env, dict):
            code = str(env.get("code") or "")
            message = str(env.get("message") or message)
            if isinstance(env.get("details"), list):
                details = [d for d in env["details"] if isinstance(d, dict)]
        code = code or str(body.get("code") or "")
        request_id = str(body.get("requestId") or "")
    return APIError(status, code, message, details, request_id, parse_retry_after(headers.get("retry-after")))
