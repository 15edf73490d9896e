"""The judge client's adaptive concurrency limit and circuit breaker, without a server."""

from __future__ import annotations

import threading
import time

import pytest

from llamavid_eval.judges.flow import AdaptiveLimit, CircuitBreaker, run_each


def test_limit_halves_once_per_round_and_grows_back_by_about_one_per_round():
    limit = AdaptiveLimit(64, start=64)
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


def test_limit_starts_low_and_grows_only_while_replies_keep_pace():
    limit = AdaptiveLimit(64)
    assert limit.limit == 4  # before the server has shown what it takes
    limit.succeeded(1.0)  # a server that answers one at a time: the first reply waited for nothing,
    for _ in range(100):  # every later one for the 3 before it
        limit.succeeded(4.0)
    assert limit.limit == 5  # the first earned a slot, the queued ones nothing
    batching = AdaptiveLimit(64)
    for _ in range(4 + 8 + 16):  # a server that batches, as fast at any load: doubles each round
        batching.succeeded(1.0)
    assert batching.limit == 32
    batching.succeeded(2.5)  # slower: no more doubling, and that reply earns nothing
    for _ in range(32):
        batching.succeeded(1.0)
    assert 32.9 < batching.limit < 33.1
    assert AdaptiveLimit(2).limit == 2  # never above the ceiling, even at the start


def test_limit_bounds_what_is_in_flight_and_never_drops_below_one():
    limit = AdaptiveLimit(4, start=4)
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


def test_run_each_reports_in_the_callers_thread_and_an_exception_there_stops_the_rest():
    caller, seen = threading.current_thread(), []

    def task(i):
        return lambda: (time.sleep(0.01), i)[1]

    run_each(
        [task(i) for i in range(20)], 4, lambda i, v: seen.append((i, v, threading.current_thread())), threading.Event()
    )
    assert sorted((i, v) for i, v, _ in seen) == [(i, i) for i in range(20)] and {t for *_, t in seen} == {caller}
    started, stop = [], threading.Event()

    def slow(i):
        return lambda: (started.append(i), time.sleep(0.2))

    def interrupt(i, v):
        raise KeyboardInterrupt

    begin = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_each([slow(i) for i in range(50)], 2, interrupt, stop)
    time.sleep(0.3)
    # the caller did not wait for the requests in flight, and nothing was started after the stop
    assert stop.is_set() and time.monotonic() - begin < 1.0 and len(started) <= 4


def test_progress_is_logged_where_no_bar_shows(monkeypatch, caplog):
    import logging

    from llamavid_eval.judges import flow

    monkeypatch.setattr(flow, "EVERY", 0.0)
    caplog.set_level(logging.INFO, logger="judges.progress")
    bar = flow.Progress("local:x", total=3, done=1)  # one cached
    bar.update(False)
    bar.update(True)
    bar.close()
    assert [r.message for r in caplog.records] == [
        "judge local:x: 2 of 3 items judged (0 failed)",
        "judge local:x: 3 of 3 items judged (1 failed)",
    ]
