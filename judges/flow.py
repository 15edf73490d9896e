"""How many requests a judge client keeps in flight, and when it stops sending altogether.

:class:`AdaptiveLimit` is AIMD (as TCP does it): a server-class judge (vLLM, SGLang) batches what
it is sent, so the client keeps up to ``maximum`` requests in flight; a 429, 5xx or timeout halves the limit
(at most once per round of requests, so one burst of refusals does not collapse it to 1), and each
success adds ``1/limit`` back, i.e. about one slot per round. :class:`CircuitBreaker` ends a batch
against a judge that is plainly down instead of retrying every remaining item on its own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("judges")


class AdaptiveLimit:
    """A concurrency bound between 1 and ``maximum`` that shrinks on overload and grows back on success."""

    def __init__(self, maximum: int) -> None:
        if maximum < 1:
            raise ValueError(f"concurrency must be >= 1, got {maximum}")
        self.maximum = maximum
        self.limit = float(maximum)
        self.active = 0
        self._last_cut = float("-inf")
        self._cond = threading.Condition()

    @contextmanager
    def slot(self) -> Iterator[float]:
        """Hold one in-flight slot; yields the start time, to pass to :meth:`overloaded`."""
        with self._cond:
            while self.active >= int(self.limit):
                self._cond.wait()
            self.active += 1
            started = time.monotonic()
        try:
            yield started
        finally:
            with self._cond:
                self.active -= 1
                self._cond.notify()

    def succeeded(self) -> None:
        with self._cond:
            if self.limit < self.maximum:
                grown = min(self.maximum, self.limit + 1.0 / self.limit)
                if int(grown) > int(self.limit):
                    self._cond.notify()
                self.limit = grown

    def overloaded(self, started: float) -> None:
        """Halve the limit, unless a request sent after the last cut already did (one cut per round)."""
        with self._cond:
            if started <= self._last_cut:
                return
            self.limit = max(1.0, self.limit / 2)
            self._last_cut = time.monotonic()
            log.info("judge client: server overloaded, concurrency limit now %d", int(self.limit))


class CircuitBreaker:
    """Trips after ``threshold`` consecutive failures of one kind; any success resets the count.

    With many requests in flight, a server restarting for a second fails them all at once, so for
    kinds in ``patient`` (connection failures) the streak must also have lasted ``window`` seconds:
    a blip is ridden out by the retries, a server that stays down still stops the batch in seconds.
    """

    def __init__(self, threshold: int = 10, window: float = 3.0, patient: tuple[str, ...] = ("connection",)) -> None:
        if threshold < 1 or window < 0:
            raise ValueError(f"need breaker threshold >= 1 and window >= 0, got {threshold} and {window}")
        self.threshold = threshold
        self.window = window
        self.patient = patient
        self._lock = threading.Lock()
        self._kind: str | None = None
        self._count = 0
        self._since = 0.0
        self.reason: str | None = None
        self.stopped = threading.Event()  # set when tripped: wakes requests sleeping in backoff

    def reset(self) -> None:
        with self._lock:
            self._kind, self._count, self.reason = None, 0, None
            self.stopped.clear()

    def succeeded(self) -> None:
        with self._lock:
            self._kind, self._count = None, 0

    def failed(self, kind: str, reason: str, judge: str) -> None:
        with self._lock:
            if self.reason is not None:
                return
            now = time.monotonic()
            if kind != self._kind:
                self._kind, self._count, self._since = kind, 0, now
            self._count += 1
            lasted = now - self._since
            if self._count < self.threshold or (kind in self.patient and lasted < self.window):
                return
            self.reason = (
                f"judge stopped after {self._count} consecutive {kind} failures in {lasted:.1f} s; last: {reason}"
            )
            self.stopped.set()
        log.error(
            "judge %s: %s. The remaining items of this batch are recorded as failed (not cached: a rerun "
            "asks them again).",
            judge,
            self.reason,
        )
