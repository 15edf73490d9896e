"""Uncertainty inside lmms-eval's own output: a stderr for every per-item metric and a 95% interval row.

lmms-eval 0.7 fills its ``Stderr`` column only for its own aggregation functions (``mean``, ...), so
every custom aggregation of ours printed ``N/A``. Two of its mechanisms do fit:

* ``Stderr_CLT`` / ``Stderr_Clustered``: after all aggregations ran, lmms-eval reads each record's
  ``score_key`` field (our YAMLs set ``score_key: item_value``) and ``cluster_key`` field
  (``cluster_key: video``) and computes the naive and the video-clustered standard error. Our
  aggregations write the per-item value (in the metric's units, e.g. 0/100 for accuracy) into each
  record; an item a metric does not cover (judge failure, other class) gets no value and is left out.
  ``item_value`` rather than lmms-eval's default ``score``: a top-level ``score`` would read as a
  judge's 0-5 score to anyone reading the samples.
* Metrics of our own for the interval: ``<metric>_ci_low``, ``<metric>_ci_high`` and ``<metric>_n``
  (items the interval rests on) for each headline metric, from :func:`cluster_bootstrap_mean`
  (percentile, resampling videos, :data:`RESAMPLES` resamples, seed :data:`SEED`).

Each metric gets its own copy of an item's record (:func:`metric_records`) because lmms-eval's
score key is one name per task while the value differs per metric.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from loguru import logger

from llamavid_eval.core.outputs import CI_PARTS
from llamavid_eval.core.stats import PERCENT, Interval, cluster_bootstrap_mean

Record = dict[str, Any]
ItemValues = Callable[[Sequence[Record], Any], list[float | None]]
"""Per-item values of one metric, in its units, for (records, task_config); None: item not counted."""

CLUSTER_KEY = "video"
SCORE_KEY = "item_value"
RESAMPLES = 2000
SEED = 0


def metric_records(record: Record, video: str, metrics: Iterable[str]) -> dict[str, Record]:
    """One copy of an item's record per metric, each naming the item's video (its cluster)."""
    return {metric: {**record, CLUSTER_KEY: video} for metric in metrics}


def ci_names(metrics: Iterable[str]) -> tuple[str, ...]:
    """``<metric>_ci_low``, ``<metric>_ci_high``, ``<metric>_n`` for each metric."""
    return tuple(f"{metric}_{part}" for metric in metrics for part in CI_PARTS)


def mark_mean(records: Sequence[Record], values: Sequence[float | None]) -> float:
    """Write each item's value under :data:`SCORE_KEY` (lmms-eval's stderr columns read it) and
    return the mean of the values that exist (nan when none do)."""
    present = []
    for record, value in zip(records, values, strict=True):
        if value is None:
            record.pop(SCORE_KEY, None)
        else:
            record[SCORE_KEY] = value
            present.append(value)
    return sum(present) / len(present) if present else math.nan


def interval(
    records: Sequence[Record], values: Sequence[float | None], bounds: tuple[float, float] = PERCENT
) -> Interval:
    """The 95% cluster-bootstrap interval of the mean of ``values`` (None excluded), by video."""
    floats = tuple(math.nan if v is None else float(v) for v in values)
    videos = tuple(str(r.get(CLUSTER_KEY, r.get("id"))) for r in records)
    return _bootstrap(floats, videos, bounds)


@functools.lru_cache(maxsize=8)
def _bootstrap(values: tuple[float, ...], videos: tuple[str, ...], bounds: tuple[float, float]) -> Interval:
    """lmms-eval aggregates ``_ci_low``, ``_ci_high`` and ``_n`` separately, each over its own copy of the
    same items: the bootstrap runs once for the three."""
    return cluster_bootstrap_mean(values, videos, resamples=RESAMPLES, seed=SEED, unit="videos", bounds=bounds)


def ci_aggregations(
    metric: str, item_values: ItemValues, bounds: tuple[float, float] = PERCENT
) -> dict[str, Callable[..., float | int]]:
    """The aggregations of ``<metric>_ci_low``, ``_ci_high`` and ``_n`` (names as the YAML spells them).

    They take ``task_config`` so that ``LocalVideoTask`` binds it (judged values need the judge
    settings). ``_n`` also logs the interval in words, with the number of videos.
    """

    def compute(records: Sequence[Record], task_config: Any) -> Interval:
        return interval(records, item_values(records, task_config), bounds)

    def ci_low(records: Sequence[Record], task_config: Any = None) -> float:
        return compute(records, task_config).low

    def ci_high(records: Sequence[Record], task_config: Any = None) -> float:
        return compute(records, task_config).high

    def n(records: Sequence[Record], task_config: Any = None) -> int:
        result = compute(records, task_config)
        task = getattr(task_config, "task", None) or "task"
        logger.info(f"[{task}] {metric}: {result.describe(digits=2)}")
        return result.n

    what = f"95% cluster-bootstrap interval of {metric} (by video, {RESAMPLES} resamples, seed {SEED})"
    functions = {"ci_low": ci_low, "ci_high": ci_high, "n": n}
    docs = {
        "ci_low": f"Lower end of the {what}.",
        "ci_high": f"Upper end of the {what}.",
        "n": f"Items the {what} rests on.",
    }
    for part, fn in functions.items():
        fn.__name__ = f"{metric}_{part}"
        fn.__doc__ = docs[part]
    return {f"{metric}_{part}": fn for part, fn in functions.items()}
