"""Uncertainty for the suite's numbers: cluster-bootstrap intervals, paired differences, agreement.

Questions about the same video are not independent (MSVD-QA asks ~26 per video), so every interval
here resamples whole clusters (videos) with replacement when cluster ids are given, and items
otherwise. Missing values (nan / None: judge failures, unparsable answers) are excluded and counted
out of ``n``, so an interval always says on how many items and clusters it rests.

Layer 0: numpy and scipy only.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from scipy import stats as sps

DEFAULT_RESAMPLES = 2000
PERCENT = (0.0, 100.0)
"""``bounds`` of a percent-correct value per item (0 or 100)."""
_CHUNK_CELLS = 4_000_000  # resample draws held in memory at once (int64: ~32 MB)


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval, in the units of the input values."""

    estimate: float
    low: float
    high: float
    n: int  # items it rests on (missing items excluded)
    clusters: int  # independent units resampled (videos); == n when unclustered
    method: str
    confidence: float = 0.95

    @property
    def half_width(self) -> float:
        """Half the interval's width: the ``±`` figure of ``value ± half-width``."""
        return (self.high - self.low) / 2

    @property
    def lopsided(self) -> bool:
        """``±`` would mislead: the estimate sits at an end of the interval (e.g. 0% correct) or one
        side is more than 1.5 times the other (small samples near a bound)."""
        below, above = self.estimate - self.low, self.high - self.estimate
        return self.high > self.low and (min(below, above) <= 0 or max(below, above) > 1.5 * min(below, above))

    def short(self, digits: int = 1) -> str:
        """``69.7 ± 0.8``, or ``5.6 (0.0-16.7)`` when the interval is lopsided around the estimate."""
        if not (np.isfinite(self.low) and np.isfinite(self.high)):
            return f"{self.estimate:.{digits}f}"
        if self.lopsided:
            sep = "-" if self.low >= 0 else " to "
            return f"{self.estimate:.{digits}f} ({self.low:.{digits}f}{sep}{self.high:.{digits}f})"
        return f"{self.estimate:.{digits}f} ± {self.half_width:.{digits}f}"

    def describe(self, digits: int = 1) -> str:
        """One line for humans, e.g. ``69.7 ± 0.8 (95% CI 68.9-70.5; <method>; n=13157 in 1970 clusters)``."""
        level = f"{self.confidence * 100:g}%"
        rests = f"n={self.n}" if self.clusters == self.n else f"n={self.n} in {self.clusters} clusters"
        if not (np.isfinite(self.low) and np.isfinite(self.high)):
            return f"{self.estimate:.{digits}f} (no {level} CI; {self.method}; {rests})"
        sep = "-" if self.low >= 0 else " to "
        head = f"{self.estimate:.{digits}f}" if self.lopsided else self.short(digits)
        return f"{head} ({level} CI {self.low:.{digits}f}{sep}{self.high:.{digits}f}; {self.method}; {rests})"

    def scaled(self, factor: float) -> Interval:
        """The same interval in other units (``factor=100`` for percent)."""
        return Interval(
            self.estimate * factor,
            self.low * factor,
            self.high * factor,
            self.n,
            self.clusters,
            self.method,
            self.confidence,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready fields, half_width included."""
        return {**asdict(self), "half_width": self.half_width}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Interval:
        """The interval :meth:`to_dict` wrote (reports keep intervals as JSON)."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


def _missing_mask(column: np.ndarray) -> np.ndarray:
    """True where a value is missing: nan for numbers, None or float nan for objects."""
    if column.dtype.kind in "fc":
        return np.isnan(column)
    if column.dtype.kind == "O":
        return np.array([v is None or (isinstance(v, float) and np.isnan(v)) for v in column], dtype=bool)
    return np.zeros(len(column), dtype=bool)


def _cluster_codes(clusters: Sequence[Hashable] | np.ndarray | None, n: int) -> np.ndarray:
    """Integer cluster codes 0..G-1 per item; each item its own cluster when ``clusters`` is None."""
    if clusters is None:
        return np.arange(n)
    ids = np.asarray(clusters, dtype=object) if not isinstance(clusters, np.ndarray) else clusters
    if len(ids) != n:
        raise ValueError(f"clusters has {len(ids)} ids for {n} values; pass one cluster id (video) per value")
    _, codes = np.unique(ids.astype(str), return_inverse=True)
    return codes.reshape(-1)


def bootstrap_method(clusters_given: bool, resamples: int, seed: int, unit: str) -> str:
    """How a percentile bootstrap interval was made, as tables print it under their rows."""
    over = f"cluster bootstrap (percentile) over {unit}" if clusters_given else "bootstrap (percentile) over items"
    return f"{over}, {resamples} resamples, seed {seed}"


def exact_bound_method(unit: str) -> str:
    """How :func:`cluster_bootstrap_mean` bounds a mean whose every item sits at one end of its range.
    No counts in the text: one line under a table then serves every column that used this rule."""
    return f"every item at the same end of its range: exact binomial (Clopper-Pearson) bound, {unit} as trials"


def _draw_chunks(rng: np.random.Generator, groups: int, resamples: int):
    """Cluster draws (rows of ``groups`` indices), a few hundred resamples at a time to bound memory."""
    per_chunk = max(1, _CHUNK_CELLS // max(groups, 1))
    done = 0
    while done < resamples:
        size = min(per_chunk, resamples - done)
        yield rng.integers(0, groups, size=(size, groups))
        done += size


def _percentiles(boot: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = 1 - confidence
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def cluster_bootstrap_mean(
    values: Sequence[float] | np.ndarray,
    clusters: Sequence[Hashable] | np.ndarray | None = None,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
    unit: str = "videos",
    bounds: tuple[float, float] | None = None,
) -> Interval:
    """Mean of ``values`` with a percentile bootstrap interval that resamples whole clusters.

    Each resample draws as many clusters as there are, with replacement, and takes the mean of all
    their items (sum of cluster sums / sum of cluster counts, so clusters of unequal size weigh by
    their items, as the point estimate does). nan values are left out before anything else. Fewer
    than two clusters give nan bounds: one cluster says nothing about between-cluster variation.

    ``bounds`` (the values' range, e.g. ``(0, 100)`` for percent correct): when every item sits at
    one end of it (0% or 100% correct) the bootstrap has no spread to resample and would claim a
    zero-width interval; the exact binomial (Clopper-Pearson) bound is used instead, counting each
    cluster as ONE trial (conservative: items of a video are not independent).
    """
    x = np.asarray(values, dtype=float).reshape(-1)
    codes = _cluster_codes(clusters, len(x))
    keep = ~np.isnan(x)
    x, codes = x[keep], codes[keep]
    method = bootstrap_method(clusters is not None, resamples, seed, unit)
    _, codes = np.unique(codes, return_inverse=True)
    groups = int(codes.max()) + 1 if len(codes) else 0
    if groups == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0, 0, method, confidence)
    estimate = float(x.mean())
    if groups < 2:
        return Interval(estimate, float("nan"), float("nan"), len(x), groups, method, confidence)
    if bounds is not None and estimate in bounds and np.all(x == estimate):
        return _at_bound(estimate, bounds, len(x), groups, confidence, unit)
    sums = np.bincount(codes, weights=x, minlength=groups)
    counts = np.bincount(codes, minlength=groups).astype(float)
    rng = np.random.default_rng(seed)
    boot = np.concatenate([sums[d].sum(1) / counts[d].sum(1) for d in _draw_chunks(rng, groups, resamples)])
    low, high = _percentiles(boot, confidence)
    return Interval(estimate, low, high, len(x), groups, method, confidence)


def _at_bound(
    estimate: float, bounds: tuple[float, float], n: int, groups: int, confidence: float, unit: str
) -> Interval:
    """Clopper-Pearson interval for 0 (or all) successes in ``groups`` trials, in the values' units."""
    lowest, highest = bounds
    reach = (highest - lowest) * float(sps.beta.ppf(confidence + (1 - confidence) / 2, 1, groups))
    low, high = (lowest, lowest + reach) if estimate == lowest else (highest - reach, highest)
    return Interval(estimate, low, high, n, groups, exact_bound_method(unit), confidence)


def paired_difference(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    clusters: Sequence[Hashable] | np.ndarray | None = None,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
    unit: str = "videos",
    bounds: tuple[float, float] | None = None,
) -> Interval:
    """mean(b - a) over items matched by position, with a cluster-bootstrap interval.

    Pairing removes the between-item variation both runs share, so this interval is much narrower
    than comparing two separate intervals. An item missing in either run is left out of both.
    ``bounds``: the range of a difference (e.g. ``(-100, 100)`` for percent correct), see
    :func:`cluster_bootstrap_mean`.
    """
    a = np.asarray(a, dtype=float).reshape(-1)
    b = np.asarray(b, dtype=float).reshape(-1)
    if len(a) != len(b):
        raise ValueError(
            f"paired_difference needs matched items: a has {len(a)}, b has {len(b)}; match them by id first"
        )
    return cluster_bootstrap_mean(
        b - a, clusters, resamples=resamples, seed=seed, confidence=confidence, unit=unit, bounds=bounds
    )


def _cluster_ranges(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row order grouping clusters together, start of each cluster in that order, its length)."""
    order = np.argsort(codes, kind="stable")
    lengths = np.bincount(codes)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return order, starts, lengths


def _resample_rows(draw: np.ndarray, order: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Row indices of all items of the drawn clusters, built without a Python loop over clusters."""
    lens = lengths[draw]
    offsets = np.repeat(starts[draw] - (np.cumsum(lens) - lens), lens)
    return order[offsets + np.arange(lens.sum())]


def bootstrap_statistic(
    statistic: Callable[..., float],
    columns: dict[str, Sequence[Any] | np.ndarray],
    clusters: Sequence[Hashable] | np.ndarray | None = None,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
    name: str = "",
    unit: str = "videos",
) -> Interval:
    """Any statistic of several aligned columns (kappa, agreement) with a cluster-bootstrap interval.

    ``statistic(**columns)`` is called on the full data for the estimate and on each resample of
    whole clusters for the interval. Rows with a missing value in any column are left out first.
    Resamples on which the statistic is undefined (nan) are dropped from the percentiles.
    """
    arrays = {k: np.asarray(v) if not isinstance(v, np.ndarray) else v for k, v in columns.items()}
    lengths = {len(v) for v in arrays.values()}
    if len(lengths) != 1:
        raise ValueError(f"bootstrap_statistic columns differ in length: { {k: len(v) for k, v in arrays.items()} }")
    n_all = lengths.pop()
    codes = _cluster_codes(clusters, n_all)
    keep = ~np.any([_missing_mask(v) for v in arrays.values()], axis=0) if arrays else np.ones(n_all, bool)
    arrays = {k: v[keep] for k, v in arrays.items()}
    _, codes = np.unique(codes[keep], return_inverse=True)
    method = bootstrap_method(clusters is not None, resamples, seed, unit)
    if name:
        method = f"{name}; {method}"
    n, groups = int(keep.sum()), (int(codes.max()) + 1 if keep.any() else 0)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0, 0, method, confidence)
    estimate = float(statistic(**arrays))
    if groups < 2:
        return Interval(estimate, float("nan"), float("nan"), n, groups, method, confidence)
    order, starts, sizes = _cluster_ranges(codes)
    rng = np.random.default_rng(seed)
    boot = np.empty(resamples)
    for i in range(resamples):
        rows = _resample_rows(rng.integers(0, groups, size=groups), order, starts, sizes)
        boot[i] = statistic(**{k: v[rows] for k, v in arrays.items()})
    low, high = _percentiles(boot, confidence)
    return Interval(estimate, low, high, n, groups, method, confidence)


def cluster_robust_stderr(
    values: Sequence[float] | np.ndarray, clusters: Sequence[Hashable] | np.ndarray | None
) -> float:
    """Cluster-robust (CR1 sandwich) standard error of the mean of ``values``.

    ``sqrt(G / (G - 1) * sum_g (sum of residuals in g)^2) / n``; with every item its own cluster it
    is the ordinary ``std(ddof=1) / sqrt(n)``. nan values are left out; nan when fewer than 2 clusters.
    """
    x = np.asarray(values, dtype=float).reshape(-1)
    codes = _cluster_codes(clusters, len(x))
    keep = ~np.isnan(x)
    x, codes = x[keep], codes[keep]
    _, codes = np.unique(codes, return_inverse=True)
    groups = int(codes.max()) + 1 if len(codes) else 0
    if groups < 2:
        return float("nan")
    residual_sums = np.bincount(codes, weights=x - x.mean(), minlength=groups)
    return float(np.sqrt(groups / (groups - 1) * np.sum(residual_sums**2)) / len(x))


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (items only A / only B got right).

    Under no difference each discordant item is a fair coin, so this is a binomial test; 1.0 when
    there are no discordant items.
    """
    if only_a < 0 or only_b < 0:
        raise ValueError(f"mcnemar_exact needs counts >= 0, got only_a={only_a}, only_b={only_b}")
    total = int(only_a) + int(only_b)
    if total == 0:
        return 1.0
    return float(sps.binomtest(int(only_a), total, 0.5, alternative="two-sided").pvalue)


def _label_codes(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Both raters' labels as codes into one shared label set (numpy's fast path unless mixed objects)."""
    if a.dtype.kind != "O" and b.dtype.kind != "O":
        labels, codes = np.unique(np.concatenate([a, b]), return_inverse=True)
        return codes[: len(a)], codes[len(a) :], len(labels)
    index = {label: i for i, label in enumerate(dict.fromkeys([*a, *b]))}
    ai = np.fromiter((index[x] for x in a), dtype=int, count=len(a))
    bi = np.fromiter((index[x] for x in b), dtype=int, count=len(b))
    return ai, bi, len(index)


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """Cohen's kappa between two raters' labels (any hashable); pairs with a missing label are left out.

    Hand-written (a few lines) because scikit-learn, which has it, is not a dependency. nan when
    undefined: no pairs, or both raters use one and the same label (chance agreement is 1).
    """
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    if len(a_arr) != len(b_arr):
        raise ValueError(f"cohen_kappa needs paired labels: a has {len(a_arr)}, b has {len(b_arr)}")
    keep = ~(_missing_mask(a_arr) | _missing_mask(b_arr))
    if not keep.any():
        return float("nan")
    ai, bi, n_labels = _label_codes(a_arr[keep], b_arr[keep])
    observed = float(np.mean(ai == bi))
    chance = float(np.dot(np.bincount(ai, minlength=n_labels), np.bincount(bi, minlength=n_labels))) / len(ai) ** 2
    if chance >= 1.0:
        return float("nan")
    return (observed - chance) / (1.0 - chance)


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Kendall's tau-b between two rankings/scores and its two-sided p (scipy); pairs with nan left out."""
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(xa) != len(ya):
        raise ValueError(f"kendall_tau needs paired values: x has {len(xa)}, y has {len(ya)}")
    keep = ~(np.isnan(xa) | np.isnan(ya))
    if keep.sum() < 2:
        return float("nan"), float("nan")
    result = sps.kendalltau(xa[keep], ya[keep])
    return float(result.statistic), float(result.pvalue)


WILSON = "Wilson score interval (independent items)"


def proportion_interval(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """Share of ``successes`` in ``n`` independent trials with its Wilson score interval (scipy), as a
    fraction; for items that share no cluster, e.g. the judge exam's (nan with n=0)."""
    if n <= 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0, 0, WILSON, confidence)
    ci = sps.binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return Interval(successes / n, float(ci.low), float(ci.high), n, n, WILSON, confidence)
