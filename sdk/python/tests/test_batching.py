"""report(): background batches by size and linger, bounded memory, flush on close."""

from conftest import err, eventually


def ok_batch(req):
    evs = req["body"]["events"]
    return 202, {}, {"accepted": len(evs), "duplicates": 0, "rejected": 0, "failed": 0,
                     "results": [{"index": i, "eventId": e["eventId"], "status": "accepted"} for i, e in enumerate(evs)]}


def sent(server):
    return [e for r in server.calls("/v1/events/batch") for e in r["body"]["events"]]


def test_batches_by_size_and_flushes_the_rest_on_close(server, client):
    server.on("POST", "/v1/events/batch", ok_batch)
    c = client(batch_size=3, linger=60)
    for i in range(7):
        assert c.report({"category": "tool_api", "payload": {"i": i}})
    eventually(lambda: len(server.calls("/v1/events/batch")) == 2)
    assert [len(r["body"]["events"]) for r in server.calls("/v1/events/batch")] == [3, 3]
    assert c.close(timeout=5)
    assert [e["payload"]["i"] for e in sent(server)] == list(range(7))
    ev = sent(server)[0]
    assert ev["agentId"] == "bot-1" and ev["sessionId"] == "s-1" and ev["schemaVersion"] == "1.0"
    assert ev["sourceTimestamp"].endswith("Z") and len(ev["eventId"]) == 36
    assert all(r["headers"].get("idempotency-key") for r in server.calls("/v1/events/batch"))
    assert c.stats["sent"] == 7


def test_linger_sends_a_partial_batch(server, client):
    server.on("POST", "/v1/events/batch", ok_batch)
    c = client(batch_size=100, linger=0.05)
    c.report({"category": "tool_api"})
    eventually(lambda: len(sent(server)) == 1)


def test_bounded_memory_drops_and_counts(server, client):
    server.on("POST", "/v1/events/batch", err(503, "SERVICE_UNAVAILABLE"))
    c = client(batch_size=100, linger=60, max_queue=3)
    assert [c.report({"category": "x"}) for _ in range(5)] == [True, True, True, False, False]
    assert c.stats["dropped"] == 2


def test_failed_items_are_retried_and_rejected_ones_reported(server, client):
    seen = []

    def first_partial(req):
        evs = req["body"]["events"]
        if len(server.calls("/v1/events/batch")) == 1:
            return 202, {}, {"results": [
                {"index": 0, "status": "accepted"},
                {"index": 1, "status": "failed"},
                {"index": 2, "status": "rejected", "error": {"code": "VALIDATION_ERROR", "message": "bad", "details": [{"path": "events[2].category", "code": "invalid_format"}]}},
            ]}
        return ok_batch(req)

    server.on("POST", "/v1/events/batch", first_partial)
    c = client(batch_size=3, on_error=lambda ev, e: seen.append((ev["payload"]["i"], e.detail_code)))
    c._batcher.retry_pause = 0.01
    for i in range(3):
        c.report({"category": "tool_api", "payload": {"i": i}})
    assert c.flush(timeout=5)
    assert [e["payload"]["i"] for e in sent(server)] == [0, 1, 2, 1]
    assert seen == [(2, "invalid_format")]
    assert (c.stats["sent"], c.stats["rejected"], c.stats["retried"]) == (2, 1, 1)


def test_unavailable_keeps_events_until_vigil_is_back(server, client):
    server.on("POST", "/v1/events/batch", err(503, "SERVICE_UNAVAILABLE"), err(503, "SERVICE_UNAVAILABLE"), err(503, "SERVICE_UNAVAILABLE"),
              err(503, "SERVICE_UNAVAILABLE"), err(503, "SERVICE_UNAVAILABLE"), ok_batch)
    c = client(batch_size=2, max_retries=1)
    c._batcher.retry_pause = 0.01
    c.report({"category": "a"})
    c.report({"category": "b"})
    assert c.flush(timeout=5)
    assert [e["category"] for e in sent(server)][-2:] == ["a", "b"]
    assert c.stats["sent"] == 2 and c.stats["dropped"] == 0
    ids = [r["body"]["events"][0]["eventId"] for r in server.calls("/v1/events/batch")]
    assert len(set(ids)) == 1, "a retried event keeps its eventId, so Vigil stores it once"


def test_flush_times_out_while_vigil_is_down(server, client):
    server.on("POST", "/v1/events/batch", err(503, "SERVICE_UNAVAILABLE"))
    c = client(max_retries=0)
    c._batcher.retry_pause = 0.01
    c.report({"category": "a"})
    assert not c.flush(timeout=0.2)
    assert c._batcher.pending() == 1
