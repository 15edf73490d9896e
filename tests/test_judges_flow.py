"""The judge client's adaptive concurrency limit and circuit breaker, without a server."""

from __future__ import annotations

import threading
import time

import pytest
from llamavid_eval.judges.flow import AdaptiveLimit, CircuitBreaker


def test_limit_halves_once_per_round_and_grows_back_by_about_one_per_round():
    limit = AdaptiveLimit(64)
    with limit.slot() as first, limit.slot() as second:
        pass
    limit.overloaded(first)
    limit.overloaded(second)  # sent before the cut: the same overload, not a second one
    assert limit.limit == 32
    with limit.slot() as later:
        pass
    limit.overloaded(later)
    assert limit.limit == 16
    for _ in range(16):  # one round of successes at limit 16 adds about one slot
        limit.succeeded()
    assert 16.9 < limit.limit < 17.1
    for _ in range(10_000):
        limit.succeeded()
    assert limit.limit == 64  # never above the ceiling
    with pytest.raises(ValueError, match="concurrency must be >= 1"):
        AdaptiveLimit(0)


def test_limit_bounds_what_is_in_flight_and_never_drops_below_one():
    limit = AdaptiveLimit(4)
    for _ in range(10):
        with limit.slot() as started:
            pass
        limit.overloaded(started)
    assert limit.limit == 1
    peak, lock = [0], threading.Lock()

    def work():
        with limit.slot():
            with lock:
                peak[0] = max(peak[0], limit.active)
            time.sleep(0.01)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 1 and limit.active == 0


def test_breaker_needs_consecutive_failures_of_one_kind():
    breaker = CircuitBreaker(3, window=0)
    for kind in ("connection", "connection", "model", "connection"):
        breaker.failed(kind, "boom", "local:x")
    breaker.succeeded()
    breaker.failed("connection", "boom", "local:x")
    breaker.failed("connection", "boom", "local:x")
    assert breaker.reason is None and not breaker.stopped.is_set()
    breaker.failed("connection", "refused", "local:x")
    assert breaker.reason.startswith("judge stopped after 3 consecutive connection failures in 0.0 s; last: refused")
    assert breaker.stopped.is_set()
    breaker.reset()
    assert breaker.reason is None and not breaker.stopped.is_set()


def test_breaker_rides_out_a_burst_of_connection_failures_but_not_a_down_server():
    breaker = CircuitBreaker(2, window=0.3)
    for _ in range(50):  # every request in flight failing at once: a restart, perhaps
        breaker.failed("connection", "refused", "local:x")
    assert breaker.reason is None
    time.sleep(0.35)
    breaker.failed("connection", "refused", "local:x")  # still failing after the window: down
    assert breaker.reason is not None and "51 consecutive connection failures" in breaker.reason
    fresh = CircuitBreaker(2, window=60)
    fresh.failed("model", "pinned", "local:x")
    fresh.failed("model", "pinned", "local:x")
    assert fresh.reason is not None  # a wrong model does not get better by waiting
