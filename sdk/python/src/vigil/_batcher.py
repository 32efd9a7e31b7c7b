"""Background batching of reported events: bounded memory, flush on close."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Mapping, Optional

from .errors import APIError, VigilError

log = logging.getLogger("vigil")

#: The API takes at most this many events in one batch.
MAX_BATCH = 1000


class Batcher:
    """Queues events and sends them in batches from one daemon thread.

    A batch leaves when ``batch_size`` events are queued or ``linger``
    seconds after its first event, whichever comes first. At most
    ``max_queue`` events are held: :meth:`add` refuses more (and counts
    them as dropped) rather than grow without bound while Vigil is away.
    Items the server did not store in time (``failed``) and whole batches
    that could not be sent are put back at the front and retried after a
    pause; items it refused (``rejected``) are dropped and handed to
    ``on_error``.
    """

    def __init__(
        self,
        send: Callable[[List[Dict[str, Any]], str], Any],
        *,
        batch_size: int = 100,
        linger: float = 0.5,
        max_queue: int = 10000,
        retry_pause: float = 1.0,
        on_error: Optional[Callable[[Mapping[str, Any], BaseException], None]] = None,
    ) -> None:
        self._send = send
        self.batch_size = max(1, min(batch_size, MAX_BATCH))
        self.linger = linger
        self.max_queue = max(1, max_queue)
        self.retry_pause = retry_pause
        self.on_error = on_error
        self._q: Deque[Dict[str, Any]] = deque()
        self._cv = threading.Condition()
        self._first_at: Optional[float] = None
        self._flush_requested = 0
        self._flushed = 0
        self._closed = False
        self._inflight = 0
        self.stats = {"queued": 0, "sent": 0, "duplicates": 0, "rejected": 0, "dropped": 0, "retried": 0}
        self._thread = threading.Thread(target=self._run, name="vigil-batcher", daemon=True)
        self._thread.start()

    def add(self, event: Dict[str, Any]) -> bool:
        with self._cv:
            if self._closed:
                raise VigilError("vigil: client is closed")
            if len(self._q) + self._inflight >= self.max_queue:
                self.stats["dropped"] += 1
                if self.stats["dropped"] == 1 or self.stats["dropped"] % 1000 == 0:
                    log.warning("vigil: event buffer full (%d); %d events dropped", self.max_queue, self.stats["dropped"])
                return False
            self._q.append(event)
            self.stats["queued"] += 1
            if self._first_at is None:
                self._first_at = time.monotonic()
            if len(self._q) == 1 or len(self._q) >= self.batch_size:
                self._cv.notify_all()  # the sender starts the linger clock, or sends a full batch
            return True

    def pending(self) -> int:
        with self._cv:
            return len(self._q) + self._inflight

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Send everything queued now; True when it all left (stored or refused) in time."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            self._flush_requested += 1
            self._cv.notify_all()
            while self._q or self._inflight:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cv.wait(left if left is not None else 0.5)
            return True

    def close(self, timeout: Optional[float] = 10.0) -> bool:
        ok = self.flush(timeout)
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout=1.0)
        return ok

    def _take(self) -> Optional[List[Dict[str, Any]]]:
        with self._cv:
            while True:
                if self._q:
                    due = (self._first_at or time.monotonic()) + self.linger
                    if len(self._q) >= self.batch_size or self._flush_requested or self._closed or time.monotonic() >= due:
                        n = min(self.batch_size, len(self._q))
                        batch = [self._q.popleft() for _ in range(n)]
                        self._inflight = n
                        self._first_at = time.monotonic() if self._q else None
                        return batch
                    self._cv.wait(max(0.0, due - time.monotonic()))
                    continue
                self._flush_requested = 0
                if self._closed:
                    return None
                self._cv.wait()

    def _put_back(self, items: List[Dict[str, Any]]) -> None:
        with self._cv:
            self.stats["retried"] += len(items)
            self._q.extendleft(reversed(items))
            if self._first_at is None:
                self._first_at = time.monotonic()

    def _done(self) -> None:
        with self._cv:
            self._inflight = 0
            self._cv.notify_all()

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            pause = False
            try:
                res = self._send(batch, str(uuid.uuid4()))
            except APIError as e:
                # The whole batch was refused (bad request, forbidden…): retrying will not help.
                with self._cv:
                    self.stats["rejected"] += len(batch)
                for ev in batch:
                    self._report(ev, e)
            except Exception as e:  # unavailable or breaker open: keep the events, try later
                log.debug("vigil: batch not sent, will retry: %s", e)
                self._put_back(batch)
                pause = True
            else:
                pause = self._settle(batch, res)
            self._done()
            if pause:
                with self._cv:
                    if not self._closed:
                        self._cv.wait(self.retry_pause)
                    else:
                        return

    def _settle(self, batch: List[Dict[str, Any]], res: Any) -> bool:
        results = res.get("results") if isinstance(res, dict) else None
        if not isinstance(results, list):
            with self._cv:
                self.stats["sent"] += len(batch)
            return False
        retry: List[Dict[str, Any]] = []
        for r in results:
            if not isinstance(r, dict) or not isinstance(r.get("index"), int) or not 0 <= r["index"] < len(batch):
                continue
            ev, status = batch[r["index"]], r.get("status")
            with self._cv:
                if status == "accepted":
                    self.stats["sent"] += 1
                elif status == "duplicate":
                    self.stats["duplicates"] += 1
                elif status == "failed":
                    retry.append(ev)
                else:
                    self.stats["rejected"] += 1
            if status == "rejected":
                e = r.get("error")
                err: Dict[str, Any] = e if isinstance(e, dict) else {}
                self._report(ev, APIError(400, str(err.get("code", "")), str(err.get("message", "rejected")), err.get("details")))
        if retry:
            self._put_back(retry)
            return True
        return False

    def _report(self, event: Mapping[str, Any], err: BaseException) -> None:
        if self.on_error is None:
            log.warning("vigil: event %s refused: %s", event.get("eventId"), err)
            return
        try:
            self.on_error(event, err)
        except Exception:  # a callback's failure must not stop the sender
            log.exception("vigil: on_error callback failed")
