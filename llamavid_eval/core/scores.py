"""A judged task's numbers from its recorded verdicts: the one function every view calls.

lmms-eval's aggregation hooks (``tasks/common/local_task.py``) call :func:`judged_scores` on the verdicts
they just recorded and write its values into ``*_results.json``; ``results compare`` and ``judge swap``
call it on the verdicts they read or obtain; ``results table`` shows what the run wrote. There is no
second implementation of a judged metric or of its interval.

Every judged metric is reported two ways:

* VALID (``accuracy``, ``mean_score``): judge failures left out (transient errors must not count as
  "no"), the number of the paper's protocol;
* ALL (``accuracy_all``, ``mean_score_all``): a failure counted as wrong (0), what lmms-eval's and
  VLMEvalKit's "ALL" report.

Each comes with its 95% cluster-bootstrap interval by video (:func:`llamavid_eval.core.stats.cluster_bootstrap_mean`,
2000 resamples, seed 0) written as ``<metric>_ci_low``, ``_ci_high``, ``_n`` (the items it rests on) and
``_clusters`` (their videos).

The failure budget (``LLAMAVID_JUDGE_MAX_FAILURE_RATE``, default :data:`DEFAULT_MAX_FAILURE_RATE`):
when more than that share of a task's items has no verdict, the run says nothing about the model, so
the headline metrics and their intervals are NaN (never a clean-looking score), ``judge_failures``
and ``judged_items`` stay, and :meth:`JudgedScores.budget_error` says why and how to re-judge. The
commands apply the same rule per judge and task before they exit (``--max-failure-rate``,
:func:`budget_errors`).

:func:`metric_items` (second half of this file) reads the per-item values behind any task metric
back from logged samples: the input of every interval and paired test. lmms-eval keeps only the
aggregate in results.json; the samples file keeps each item's record. A judgement gives ``100 *
verdict`` for accuracy metrics and ``score`` for score metrics (a failed judgement gives no value:
excluded from the denominator, counted apart) as :class:`Verdict` reads it, wherever in the sample it
was logged; ``{gold, pred}`` gives ``100 * (gold == pred)``; a ``correct`` flag ``100 * correct``; a
plain number is taken as it is. A metric named ``<acc>_<word>`` averages only the items one of whose
text fields is ``<word>`` (``acc_arson`` -> gold ``Arson``; ``accuracy_colour`` -> question_type
``colour``). A record that carries ``item_value`` (our tasks write it for lmms-eval's stderr columns)
is taken at its word: that value, and no value = not an item of this metric (unless its judgement
failed). Metrics that are not means of items (``macro_accuracy``, counts such as ``unmapped``) give
None. Items are keyed by ``doc_id`` (the same item in two runs of a task) and clustered by the video
they are about: the record's ``video`` key, else the logged doc's, else the item itself.
"""

from __future__ import annotations

import argparse
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llamavid_eval.core.outputs import CI_PARTS, is_judgement, judged_records, judgement_failed, normalize_judgement
from llamavid_eval.core.records import VIDEO_KEY
from llamavid_eval.core.stats import (
    DEFAULT_RESAMPLES,
    PERCENT,
    Interval,
    bootstrap_method,
    cluster_bootstrap_mean,
    exact_bound_method,
)
from llamavid_eval.core.ucf import NORMAL, UNMAPPED

MAX_FAILURE_RATE_ENV = "LLAMAVID_JUDGE_MAX_FAILURE_RATE"
DEFAULT_MAX_FAILURE_RATE = 0.05
"""Share of a task's judgements that may fail before its judged metrics are withheld (a few transient errors)."""
SCORE_RANGE = (0.0, 5.0)
"""The judge's 0-5 score (the prompt's scale)."""
SEED = 0
CLUSTER_UNIT = "videos"
"""What :func:`mean_interval` resamples, as its method text names it."""
#: metric -> (per-item quantity, failures counted as 0, value range)
MEASURES = {
    "accuracy": ("verdict", False, PERCENT),
    "mean_score": ("score", False, SCORE_RANGE),
    "accuracy_all": ("verdict", True, PERCENT),
    "mean_score_all": ("score", True, SCORE_RANGE),
}
HEADLINE = tuple(MEASURES)
COUNTS = ("judge_failures", "judged_items")
METRICS = (*(name for m in HEADLINE for name in (m, *(f"{m}_{part}" for part in CI_PARTS))), *COUNTS)
"""Every metric a judged task reports, ``accuracy`` first (its YAML's ``metric_list``)."""


@dataclass(frozen=True)
class Verdict:
    """One judged item as recorded: its video (the cluster), the verdict and score, or the failure."""

    cluster: str | None  # None: the item names no video (items then count as independent)
    verdict: bool | None
    score: float | None
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.verdict is None or self.score is None

    def value(self, metric: str) -> float | None:
        """The item's value for ``metric`` (accuracy 0/100, score 0-5); None: a failure left out (VALID)."""
        quantity, failures_count, _ = MEASURES[metric]
        if self.failed:
            return 0.0 if failures_count else None
        return 100.0 * bool(self.verdict) if quantity == "verdict" else float(self.score)  # type: ignore[arg-type]


def verdict_of(record: Mapping[str, Any], cluster: str | None) -> Verdict:
    """The :class:`Verdict` of a logged record: its judgement flat or nested under ``judgement``."""
    flat = normalize_judgement(dict(record))
    if judgement_failed(flat):
        return Verdict(cluster, None, None, str(flat.get("error") or "no verdict recorded"))
    return Verdict(cluster, bool(flat["verdict"]), float(flat["score"]))


@dataclass(frozen=True)
class JudgedScores:
    """Every judged metric of one task (both ways, with intervals), its failures and the budget verdict."""

    n: int
    failures: int
    max_failure_rate: float
    reason: str | None
    intervals: dict[str, Interval] = field(repr=False)

    @property
    def over_budget(self) -> bool:
        return excess(self.failures, self.n, self.max_failure_rate) is not None

    def values(self) -> dict[str, float]:
        """metric name -> value, for every name in :data:`METRICS`; the headline ones NaN over budget."""
        out = {"judge_failures": float(self.failures), "judged_items": float(self.n)}
        for metric, iv in self.intervals.items():
            out.update(interval_values(metric, iv, withheld=self.over_budget))
        return out

    def budget_error(self, task: str) -> str | None:
        """The ERROR line when the failures exceed the budget (None within it): task, count, reason, the fix."""
        if not self.over_budget:
            return None
        share = 100.0 * self.failures / self.n
        return (
            f"[{task}] judge failed on {self.failures} of {self.n} items ({share:.1f}% > {MAX_FAILURE_RATE_ENV}="
            f"{self.max_failure_rate:g}): {', '.join(HEADLINE)} withheld (NaN), they would rest on "
            f"{self.n - self.failures} items. Most common reason: {self.reason or 'not recorded'}. Fix the judge, "
            "then re-judge the logged samples without re-running the model: "
            "llamavid judge rejudge <output_path> (lmms-eval's --log_samples folder)"
        )


def judged_scores(verdicts: Sequence[Verdict], max_failure_rate: float = DEFAULT_MAX_FAILURE_RATE) -> JudgedScores:
    """Values and 95% intervals of every judged metric over ``verdicts`` (see the module docstring)."""
    clusters = [v.cluster for v in verdicts] if all(v.cluster is not None for v in verdicts) else None
    intervals = {
        metric: mean_interval([v.value(metric) for v in verdicts], clusters, bounds)
        for metric, (_, _, bounds) in MEASURES.items()
    }
    failed = [v for v in verdicts if v.failed]
    return JudgedScores(len(verdicts), len(failed), max_failure_rate, common_reason(v.error for v in failed), intervals)


def mean_interval(
    values: Sequence[float | None], clusters: Sequence[str] | None, bounds: tuple[float, float] | None = PERCENT
) -> Interval:
    """The mean of ``values`` (None left out) with its 95% cluster-bootstrap interval by video (``clusters``; None:
    items independent): every task's interval, made the same way (:data:`DEFAULT_RESAMPLES` resamples, seed
    :data:`SEED`)."""
    floats = [math.nan if v is None else float(v) for v in values]
    return cluster_bootstrap_mean(
        floats, clusters, resamples=DEFAULT_RESAMPLES, seed=SEED, unit=CLUSTER_UNIT, bounds=bounds
    )


def written_method(metric: str, estimate: float) -> str:
    """How :func:`mean_interval` made the interval a task wrote for ``metric`` (results.json keeps only its
    ends and ``n``): the exact binomial bound when the estimate is an end of the metric's range (every item
    at that end, the one case that rule covers), else the cluster bootstrap by video (our tasks' items
    always name their video)."""
    bounds = MEASURES[metric][2] if metric in MEASURES else PERCENT
    if estimate in bounds:
        return exact_bound_method(CLUSTER_UNIT)
    return bootstrap_method(True, DEFAULT_RESAMPLES, SEED, CLUSTER_UNIT)


def interval_values(metric: str, interval: Interval, *, withheld: bool = False) -> dict[str, float]:
    """``metric``, ``<metric>_ci_low``, ``_ci_high``, ``_n`` (items) and ``_clusters`` (videos) as a task reports
    them; NaN values if ``withheld``."""
    shown = {metric: interval.estimate, f"{metric}_ci_low": interval.low, f"{metric}_ci_high": interval.high}
    counts = {f"{metric}_n": float(interval.n), f"{metric}_clusters": float(interval.clusters)}
    return {**{k: math.nan if withheld else v for k, v in shown.items()}, **counts}


def over_budget(failures: float | None, items: float | None, max_failure_rate: float) -> bool:
    """The same budget for numbers a run wrote (``judge_failures`` of ``judged_items``), e.g. an older run."""
    if failures is None or not items:
        return False
    return excess(int(failures), int(items), max_failure_rate) is not None


def judged_items(samples: Iterable[dict[str, Any]]) -> list[tuple[str, Verdict, dict[str, Any]]]:
    """(doc id, verdict, record) of every judged item in logged samples (or re-judge items lines); empty when
    some sample holds no judgement (not a judged task)."""
    found = []
    for position, sample in enumerate(samples):
        records = judged_records(sample)
        if not records:
            return []
        record = records[0][1]
        found.append((str(sample.get("doc_id", position)), verdict_of(record, item_video(sample, record)), record))
    return found


def item_video(sample: dict[str, Any], record: Any) -> str | None:
    """The video a logged item is about (its cluster): the record's ``video``, else the logged doc's."""
    for spot in (record, sample.get("doc")):
        if isinstance(spot, dict) and isinstance(spot.get(VIDEO_KEY), (str, int)):
            return str(spot[VIDEO_KEY])
    return None


# --- The failure budget every command applies before it exits. A run where 190 of 300 judgements failed is
# not a result, and a script chaining our commands must see that in the exit status. The share applies to
# each group on its own (a judge, a task, a judge on a task: budget_errors): a judge failing every item must
# not hide behind another judge's successes in a pooled total.
def add_argument(parser: argparse.ArgumentParser) -> None:
    """``--max-failure-rate F`` (0-1, default 0), the same on every command."""
    parser.add_argument(
        "--max-failure-rate",
        type=rate,
        default=0.0,
        metavar="F",
        help="share of judgements (0-1) allowed to fail before the command exits non-zero (default 0)",
    )


def rate(text: str) -> float:
    """argparse type: a share between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--max-failure-rate must be a number between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"--max-failure-rate must be between 0 and 1, got {value}")
    return value


def common_reason(errors: Iterable[str | None]) -> str | None:
    """The most frequent failure message (and how many share it), for the last line."""
    counts = Counter(e for e in errors if e)
    if not counts:
        return None
    message, count = counts.most_common(1)[0]
    return f"{message[:300]} (x{count})" if len(counts) > 1 else message[:300]


@dataclass(frozen=True)
class Tally:
    """The failures of one group (``name``: e.g. "judge local:x on msvd_qa") and their most common ``reason``."""

    name: str
    failures: int
    total: int
    reason: str | None = None


def budget_errors(tallies: Iterable[Tally], max_rate: float, what: str = "judgements") -> list[str]:
    """One error line per group whose share of failures exceeds ``max_rate``; empty when every group is within."""
    lines = []
    for tally in tallies:
        line = excess(tally.failures, tally.total, max_rate, tally.reason, what)
        if line:
            lines.append(line.replace("error: ", f"error: {tally.name}: ", 1) if tally.name else line)
    return lines


def excess(
    failures: int,
    total: int,
    max_rate: float,
    reason: str | None = None,
    what: str = "judgements",
    where: str = "see the failures above",
) -> str | None:
    """The error line when ``failures`` of ``total`` exceed ``max_rate``, else None; it ends with the
    most common ``reason`` when known, else with ``where`` the failures are listed."""
    if failures <= 0 or total <= 0 or failures / total <= max_rate:
        return None
    why = f"most common reason: {reason}" if reason else where
    return (
        f"error: {failures} of {total} {what} failed ({100 * failures / total:.1f}% > --max-failure-rate "
        f"{max_rate:g}); {why}"
    )


# --- Per-item values of any task metric, read back from logged samples (:func:`metric_items`).
#: Where a task writes each item's value for a metric (lmms-eval's ``score_key``), when it does.
ITEM_VALUE_KEY = "item_value"
_ACCURACY_NAMES = ("accuracy", "acc", "exact_match", "gpt_eval_accuracy")
_NOT_ITEM_MEANS = ("macro_accuracy", "judge_failures", "judged_items", "unmapped", "excluded_videos")


@dataclass(frozen=True)
class ItemValue:
    key: str  # doc_id as text
    cluster: str  # video id, or the key when the record names no video
    value: float | None  # None: judge failure, excluded from the metric
    record: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass
class MetricItems:
    """The items behind one metric of one samples file."""

    task: str
    metric: str
    items: list[ItemValue]
    clustered: bool  # at least one item named its video

    @property
    def valid(self) -> list[ItemValue]:
        return [it for it in self.items if it.value is not None]

    @property
    def failures(self) -> int:
        return sum(it.value is None for it in self.items)

    @property
    def binary(self) -> bool:
        """Yes/no per item (0 or 100): McNemar applies."""
        return bool(self.valid) and all(it.value in (0.0, 100.0) for it in self.valid)

    @property
    def bounds(self) -> tuple[float, float] | None:
        """The values' range when known: percent correct per item (0 or 100); None for scores."""
        return PERCENT if self.binary and "score" not in self.metric else None

    def mean(self) -> float | None:
        valid = self.valid
        return sum(it.value for it in valid) / len(valid) if valid else None  # type: ignore[misc]


def _subset_word(metric: str) -> tuple[str, str | None]:
    """``acc_arson`` -> (``acc``, ``arson``); ``accuracy`` -> (``accuracy``, None)."""
    for base in sorted(_ACCURACY_NAMES, key=len, reverse=True):
        if metric.startswith(base + "_"):
            return base, metric[len(base) + 1 :].casefold()
    return metric, None


def _in_subset(record: dict[str, Any], word: str | None) -> bool:
    """Whether the item belongs to a subset metric's class or type (``acc_arson``: gold class Arson);
    what the model predicted never decides it."""
    if word is None:
        return True
    fields = {k: v for k, v in record.items() if k not in ("pred", "prediction")}
    return any(isinstance(v, str) and v.casefold() == word for v in fields.values())


def _side(cls: Any) -> bool | None:
    return None if cls == UNMAPPED else cls == NORMAL


def record_value(record: Any, metric: str) -> tuple[bool, float | None]:
    """(applies, value) of one logged record for ``metric``; value None = failed judgement."""
    base, _ = _subset_word(metric)
    if isinstance(record, bool) or isinstance(record, (int, float)):
        return (False, None) if isinstance(record, float) and math.isnan(record) else (True, float(record))
    if not isinstance(record, dict):
        return False, None
    flat = normalize_judgement(record)
    if "gold" in flat and "pred" in flat:
        if base == "binary_accuracy":
            return True, 100.0 * (_side(flat["pred"]) == _side(flat["gold"]))
        return (base in _ACCURACY_NAMES), 100.0 * (flat["gold"] == flat["pred"])
    if isinstance(flat.get("correct"), bool) and base in _ACCURACY_NAMES:
        return True, 100.0 * flat["correct"]
    if "prediction" in flat and any(k in flat for k in ("verdict", "score", "failed")):
        if judgement_failed(flat):
            return True, None
        if "score" in base:
            return True, float(flat["score"])
        if base in _ACCURACY_NAMES:
            return True, 100.0 * bool(flat["verdict"])
    return False, None


def metric_items(samples: Iterable[dict[str, Any]], task: str, metric: str) -> MetricItems | None:
    """The per-item values behind ``metric`` in logged samples (or re-judge items lines, filtered to
    ``task``), or None when the metric is not a mean of items."""
    name = metric.split("[")[0]
    if name in _NOT_ITEM_MEANS:
        return None
    rows = [s for s in samples if s.get("task", task) == task]
    if name in MEASURES and (judged := judged_items(rows)):
        items = [ItemValue(key, v.cluster or f"doc:{key}", v.value(name), record) for key, v, record in judged]
        return MetricItems(task, metric, items, clustered=any(v.cluster is not None for _, v, _ in judged))
    base, word = _subset_word(name)
    records = [(s, s if _is_items_line(s) else _logged(s, name, base, word)) for s in rows]
    marked = any(isinstance(r, dict) and ITEM_VALUE_KEY in r for _, r in records)
    items: list[ItemValue] = []
    for position, (sample, record) in enumerate(records):
        if marked:  # the task wrote each item's value itself: no derivation
            if isinstance(record, dict) and not _in_subset(record, word):
                continue  # another class or type than the subset metric's
            value = record.get(ITEM_VALUE_KEY) if isinstance(record, dict) else None
            flat = normalize_judgement(record) if isinstance(record, dict) else {}
            if value is None and not (is_judgement(flat) and judgement_failed(flat)):
                continue  # an item this metric does not cover (e.g. another class): not a judge failure
        else:
            applies, value = record_value(record, name)
            if not applies:
                return None
            if isinstance(record, dict) and not _in_subset(record, word):
                continue
        key = str(sample.get("doc_id", position))
        video = item_video(sample, record)
        shown = record if isinstance(record, dict) else {}
        items.append(ItemValue(key, video if video is not None else f"doc:{key}", value, shown))
    clustered = any(not it.cluster.startswith("doc:") for it in items)
    return MetricItems(task, metric, items, clustered) if items else None


def _logged(sample: dict[str, Any], name: str, base: str, word: str | None) -> Any:
    """The record behind ``name`` in a samples line: its own, or for a class or type subset (``accuracy_colour``,
    ``acc_arson``) whose item the task logged once, under the base metric, the base metric's record."""
    own = sample.get(name)
    return sample.get(base) if own is None and word is not None else own


def _is_items_line(sample: dict[str, Any]) -> bool:
    """A ``judges rejudge`` items line: the judgement itself, with ``task`` and ``doc_id``."""
    return "task" in sample and "doc_id" in sample and is_judgement(sample)
