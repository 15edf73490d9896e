"""A 95% interval for every measured metric of a leaderboard row, and the line that says how it was made.

In order of preference: from the logged samples when the run has them and their per-item values
reproduce the reported number (cluster bootstrap over videos via :mod:`llamavid_eval.core.stats`);
from the ``<metric>_ci_low/_ci_high/_n`` our tasks write into results.json (the same bootstrap, run at
evaluation time); from lmms-eval's clustered stderr (``cluster_key``), then its plain stderr (normal
approximation); otherwise none. Reported (paper/study) rows never get one: their per-item data is
not public.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from llamavid_eval.core.items import MetricItems, metric_items, reproduces
from llamavid_eval.core.outputs import iter_samples
from llamavid_eval.core.stats import DEFAULT_RESAMPLES, Interval, cluster_bootstrap_mean

if TYPE_CHECKING:
    from llamavid_eval.results.load import Run

Z_95 = 1.959963984540054  # two-sided 95% normal quantile
STDERR_METHOD = "normal approximation (value ± 1.96 × lmms-eval's stderr; items treated as independent)"
CLUSTERED_METHOD = "normal approximation (value ± 1.96 × lmms-eval's clustered stderr, by video)"
RESULTS_METHOD = "cluster bootstrap over videos written by the task into results.json (samples not logged)"
UNCLUSTERED = "samples name no video: items treated as independent"
REPORTED_NOTE = "reported rows (paper/study) carry no interval: their per-item results are not public"


def from_items(items: MetricItems, scale: float = 1.0) -> Interval:
    """Cluster-bootstrap interval of the items' mean (failed judgements excluded)."""
    valid = items.valid
    values = [it.value * scale for it in valid]  # type: ignore[operator]
    clusters = [it.cluster for it in valid] if items.clustered else None
    bounds = None if items.bounds is None else (items.bounds[0] * scale, items.bounds[1] * scale)
    interval = cluster_bootstrap_mean(values, clusters, resamples=DEFAULT_RESAMPLES, seed=0, bounds=bounds)
    if not items.clustered:
        interval = replace(interval, method=f"{interval.method} ({UNCLUSTERED})")
    return interval


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


def attach(run: Run) -> None:
    """Fill ``run.intervals`` for every metric that has a value (see the module docstring for the order)."""
    if run.kind != "measured":
        return
    for task, values in run.metrics.items():
        samples = _read(run, task)
        n = run.n_samples.get(task, (None, None))[0]
        out: dict[str, Interval] = {}
        for metric, value in values.items():
            if value is None:
                continue
            items = metric_items(samples, task, metric) if samples else None
            scale = reproduces(items, value) if items is not None else None
            if items is not None and scale is not None:
                interval: Interval | None = from_items(items, scale)
            else:
                found = dict(run.uncertainty.get(task, {}).get(metric, {}))
                if metric in run.stderr.get(task, {}):
                    found.setdefault("stderr", run.stderr[task][metric])
                interval = from_results(value, found, n)
            if interval is not None:
                out[metric] = interval
        run.intervals[task] = out


def _read(run: Run, task: str) -> list[dict[str, Any]]:
    path = run.samples.get(task)
    if path is None:
        return []
    try:
        return list(iter_samples(path))
    except (OSError, ValueError) as exc:
        run.notes.append(f"{task}: samples not used for intervals ({exc})")
        return []


def methods(runs: list[Run]) -> list[str]:
    """The distinct interval methods used by ``runs``, for the line under each table."""
    seen = dict.fromkeys(iv.method for run in runs for by_metric in run.intervals.values() for iv in by_metric.values())
    return list(seen)
