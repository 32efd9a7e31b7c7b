"""Retries, Retry-After, Idempotency-Key and the circuit breaker."""

import pytest

from conftest import err
from vigil import APIError, CircuitBreaker, CircuitOpen, VigilUnavailable
from vigil._transport import parse_retry_after

ALLOW = (200, {}, {"decision": "allow", "decisionId": "d-1", "reasonCodes": []})


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_retries_then_succeeds_with_one_idempotency_key(server, client, status):
    server.on("POST", "/v1/decisions.evaluate", err(status, "SERVICE_UNAVAILABLE"), err(status, "SERVICE_UNAVAILABLE"), ALLOW)
    c = client()
    assert c.guard("search").outcome == "allow"
    calls = server.calls("/v1/decisions.evaluate")
    assert len(calls) == 3
    keys = {r["headers"].get("idempotency-key") for r in calls}
    assert len(keys) == 1 and None not in keys, "every retry of one write carries the same Idempotency-Key"
    assert len(c._http.sleep) == 2


def test_gives_up_after_three_retries(server, client):
    server.on("POST", "/v1/decisions.evaluate", err(503, "SERVICE_UNAVAILABLE"))
    c = client()
    with pytest.raises(VigilUnavailable):
        c.guard("search")
    assert len(server.calls("/v1/decisions.evaluate")) == 4


@pytest.mark.parametrize("status,code", [(400, "VALIDATION_ERROR"), (403, "FORBIDDEN"), (404, "NOT_FOUND"), (409, "CONFLICT"), (500, "INTERNAL_ERROR")])
def test_does_not_retry_other_errors(server, client, status, code):
    server.on("POST", "/v1/decisions.evaluate", err(status, code, "nope", [{"path": "agentId", "code": "required"}]))
    c = client()
    with pytest.raises(APIError) as e:
        c.guard("search")
    assert (e.value.status, e.value.code, e.value.message, e.value.detail_code, e.value.request_id) == (status, code, "nope", "required", "r-1")
    assert len(server.calls("/v1/decisions.evaluate")) == 1


def test_honours_retry_after(server, client):
    server.on("POST", "/v1/decisions.evaluate", err(429, "RATE_LIMITED", retry_after="7"), ALLOW)
    c = client(backoff_base=0.001)
    c.guard("search")
    assert len(c._http.sleep) == 1 and 7 <= c._http.sleep[0] < 7.01


def test_backoff_is_jittered_and_exponential(client):
    c = client(backoff_base=1, backoff_max=100)
    for attempt in range(5):
        ds = [c._http.backoff(attempt, None) for _ in range(200)]
        assert all(0 <= d <= 2 ** attempt for d in ds)
        assert len(set(ds)) > 100, "full jitter spreads retries"
    assert max(c._http.backoff(20, None) for _ in range(100)) <= 100


@pytest.mark.parametrize("value,want", [("3", 3.0), ("0", 0.0), ("", None), ("soon", None), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)])
def test_parse_retry_after(value, want):
    assert parse_retry_after(value) == want


def test_every_write_has_an_idempotency_key(server, client):
    server.on("POST", "/v1/events", (202, {}, {"status": "accepted"}))
    c = client()
    c.report_now({"category": "tool_api", "payload": {}})
    (r,) = server.calls("/v1/events")
    assert r["headers"]["idempotency-key"] == r["body"]["eventId"]
    assert r["headers"]["authorization"] == "Bearer key-1"
    assert r["headers"]["x-vigil-sdk"].startswith("vigil-python/")


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_breaker_opens_fails_fast_and_recovers(server, client):
    server.on("POST", "/v1/decisions.evaluate", err(503, "SERVICE_UNAVAILABLE"))
    c = client(breaker_threshold=2, breaker_cooldown=30, max_retries=0)
    clock = Clock()
    c.breaker._clock = clock
    for _ in range(2):
        with pytest.raises(VigilUnavailable):
            c.guard("search")
    assert c.breaker.state == "open"
    with pytest.raises(CircuitOpen):
        c.guard("search")
    assert len(server.calls("/v1/decisions.evaluate")) == 2, "an open breaker sends nothing"
    # Fail open at one call site: the action runs, marked failed-open.
    d = c.guard("search", fail_open=True)
    assert d.failed_open and d.outcome == ""
    # After the cool-down one trial goes through; its failure re-opens at once.
    clock.t = 31
    assert c.breaker.state == "half-open"
    with pytest.raises(VigilUnavailable):
        c.guard("search")
    assert len(server.calls("/v1/decisions.evaluate")) == 3
    with pytest.raises(CircuitOpen):
        c.guard("search")
    clock.t = 62
    server.on("POST", "/v1/decisions.evaluate", ALLOW)
    assert c.guard("search").outcome == "allow"
    assert c.breaker.state == "closed"


def test_fail_open_only_while_the_breaker_is_open(server, client):
    server.on("POST", "/v1/decisions.evaluate", err(503, "SERVICE_UNAVAILABLE"))
    c = client(fail_open=True, max_retries=0, breaker_threshold=1)
    with pytest.raises(VigilUnavailable) as e:
        c.guard("search")
    assert not isinstance(e.value, CircuitOpen), "a failed call is no permission; only the open breaker's state is configurable"
    assert c.guard("search").failed_open
    with pytest.raises(CircuitOpen):
        c.guard("delete_db", fail_open=False)


def test_refusals_do_not_open_the_breaker(server, client):
    server.on("POST", "/v1/decisions.evaluate", err(400, "VALIDATION_ERROR"))
    c = client(breaker_threshold=1)
    for _ in range(3):
        with pytest.raises(APIError):
            c.guard("x")
    assert c.breaker.state == "closed"


def test_transport_failure_is_unavailable(client):
    from vigil import Vigil

    c = Vigil("http://127.0.0.1:9", "k", max_retries=1, linger=60)
    c._http.sleep = lambda s: None
    with pytest.raises(VigilUnavailable):
        c.guard("x")
    c.close(timeout=0)


def test_breaker_unit():
    clock = Clock()
    b = CircuitBreaker(3, 10, clock)
    b.failure(); b.failure(); b.success(); b.failure(); b.failure()
    assert b.state == "closed", "only consecutive failures count"
    b.failure()
    assert b.state == "open" and not b.allow()
    clock.t = 10
    assert b.allow() and not b.allow(), "one trial at a time when half-open"
