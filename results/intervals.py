"""A 95% interval for every measured metric of a leaderboard row, as the run recorded it, and the line that
says how it was made.

In order of preference: the ``<metric>_ci_low/_ci_high/_n`` the task wrote into results.json (made by
:mod:`llamavid_eval.core.scores` at evaluation time; for an older judged run without them,
:mod:`llamavid_eval.results.load` calls the same function on its logged verdicts); lmms-eval's
clustered stderr (``cluster_key``), then its plain stderr (normal approximation); otherwise none.
Reported (paper/study) rows never get one: their per-item data is not public.
"""

from __future__ import annotations

from collections.abc import Iterable

from llamavid_eval.core.stats import Interval

Z_95 = 1.959963984540054  # two-sided 95% normal quantile
STDERR_METHOD = "normal approximation (value ± 1.96 × lmms-eval's stderr; items treated as independent)"
CLUSTERED_METHOD = "normal approximation (value ± 1.96 × lmms-eval's clustered stderr, by video)"
RESULTS_METHOD = "cluster bootstrap over videos, 2000 resamples, seed 0, written by the task at evaluation time"
REPORTED_NOTE = "reported rows (paper/study) carry no interval: their per-item results are not public"


def from_stderr(value: float, stderr: float, n: int | None, method: str = STDERR_METHOD) -> Interval:
    count = n or 0
    return Interval(value, value - Z_95 * stderr, value + Z_95 * stderr, count, count, method)


def from_results(value: float, found: dict[str, float], n: int | None) -> Interval | None:
    """The interval results.json holds for a metric (task-written CI, else a stderr), or None."""
    if "ci_low" in found and "ci_high" in found:
        count = int(found.get("n", n or 0))
        return Interval(value, found["ci_low"], found["ci_high"], count, count, RESULTS_METHOD)
    if "stderr_clustered" in found:
        return from_stderr(value, found["stderr_clustered"], n, CLUSTERED_METHOD)
    if "stderr" in found:
        return from_stderr(value, found["stderr"], n)
    return None


def methods(intervals: Iterable[Interval]) -> list[str]:
    """The distinct methods of ``intervals``, in order, for the line under each table."""
    return list(dict.fromkeys(iv.method for iv in intervals))
