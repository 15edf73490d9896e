"""Paired comparison of two runs on the same task: is B really better than A, or is it noise?

Both runs answered the same items, so the right test pairs them: the per-item difference B - A is
averaged and its 95% interval comes from a cluster bootstrap over videos (questions about one video
are resampled together); for yes/no metrics an exact McNemar test on the discordant items says the
same thing without resampling. Items are matched by ``doc_id``; an item in one run only, or whose
id, video, question or answer differs between the runs, is listed and left out of the pairing, never dropped
silently. A judge failure leaves its item out of that run's metric and out of the pairing (counted);
``--metric accuracy_all`` pairs with failures counted as wrong instead. Each run's judged metrics (VALID and
ALL, n, failures) come from :func:`llamavid_eval.core.scores.judged_scores` on its recorded verdicts, and a run
over the judge failure budget (``LLAMAVID_JUDGE_MAX_FAILURE_RATE``) gets no verdict: its numbers say nothing.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llamavid_eval.core.outputs import SamplesFile, find_samples, iter_samples
from llamavid_eval.core.scores import (
    HEADLINE,
    MEASURES,
    JudgedScores,
    MetricItems,
    judged_items,
    judged_scores,
    mean_interval,
    metric_items,
)
from llamavid_eval.core.stats import Interval, mcnemar_exact, paired_difference
from llamavid_eval.judges.factory import resolve_settings

#: Metrics tried, in order, when none is named: the task's headline number.
DEFAULT_METRICS = ("accuracy", "exact_match", "gpt_eval_accuracy", "acc", "mean_score")
#: What must agree for two runs' items with one doc_id to be one item: MSVD-QA repeats questions word
#: for word across videos, so the record's id and video count as much as the question and answer.
_CONTENT_KEYS = ("id", "video", "question", "answer", "gold")
_LIST_LIMIT = 50  # unmatched item ids shown in Markdown (the JSON has them all)


@dataclass
class Side:
    """One run's samples for one task."""

    label: str
    samples_file: SamplesFile
    items: MetricItems
    judged: JudgedScores | None  # every judged metric of the run (None: not a judged task)


def pick_file(path: str | Path, task: str | None) -> tuple[SamplesFile, list[str]]:
    """The samples file of ``task`` under ``path`` (newest stamp when several), plus notes on what was skipped."""
    files = find_samples(path)
    tasks = sorted({f.task for f in files})
    if task is None:
        if len(tasks) > 1:
            raise ValueError(f"{path} holds samples of several tasks ({', '.join(tasks)}); choose one with --task")
        task = tasks[0]
    chosen = sorted((f for f in files if f.task == task), key=lambda f: (f.date_id, str(f.path)))
    if not chosen:
        raise ValueError(f"{path} has no samples for task {task!r} (it has: {', '.join(tasks)})")
    notes = [f"{path}: {len(chosen) - 1} older samples file(s) of {task} ignored, using {chosen[-1].path.name}"]
    return chosen[-1], notes if len(chosen) > 1 else []


def load_side(path: str | Path, task: str | None, metric: str | None, rate: float) -> tuple[Side, list[str]]:
    sf, notes = pick_file(path, task)
    samples = [s for s in iter_samples(sf.path) if s.get("task", sf.task) == sf.task]
    verdicts = [verdict for _, verdict, _ in judged_items(samples)]
    judged = judged_scores(verdicts, rate) if verdicts else None
    names = [metric] if metric else list(DEFAULT_METRICS)
    for name in names:
        items = metric_items(samples, sf.task, name)
        if items is not None:
            return Side(str(path), sf, items, judged), notes
    tried = ", ".join(names)
    raise ValueError(f"{sf.path}: no per-item values for {tried} (a metric that is a mean over items, e.g. accuracy)")


def _content(it: Any) -> tuple[Any, ...]:
    return tuple(it.record.get(k) for k in _CONTENT_KEYS)


def compare_runs(
    path_a: str | Path,
    path_b: str | Path,
    *,
    task: str | None = None,
    metric: str | None = None,
    max_failure_rate: float | None = None,
) -> dict[str, Any]:
    """The paired comparison report (JSON-ready) of two runs' samples of one task; judge failure budget:
    ``max_failure_rate`` (default ``$LLAMAVID_JUDGE_MAX_FAILURE_RATE``)."""
    rate = resolve_settings().max_failure_rate if max_failure_rate is None else max_failure_rate
    a, notes_a = load_side(path_a, task, metric, rate)
    b, notes_b = load_side(path_b, task or a.samples_file.task, metric or a.items.metric, rate)
    if a.samples_file.task != b.samples_file.task:
        raise ValueError(f"the runs are of different tasks: A {a.samples_file.task}, B {b.samples_file.task}")
    duplicates = {k for side in (a, b) for k, n in Counter(it.key for it in side.items.items).items() if n > 1}
    by_a = {it.key: it for it in a.items.items if it.key not in duplicates}
    by_b = {it.key: it for it in b.items.items if it.key not in duplicates}
    common = [k for k in by_a if k in by_b]
    differ = [k for k in common if _content(by_a[k]) != _content(by_b[k])]
    matched = [k for k in common if k not in differ]
    usable = [k for k in matched if by_a[k].value is not None and by_b[k].value is not None]
    va = [float(by_a[k].value) for k in usable]  # type: ignore[arg-type]
    vb = [float(by_b[k].value) for k in usable]  # type: ignore[arg-type]
    clustered = a.items.clustered and b.items.clustered
    clusters = [by_a[k].cluster for k in usable] if clustered else None
    report: dict[str, Any] = {
        "task": a.samples_file.task,
        "metric": a.items.metric,
        "a": _side_summary(a),
        "b": _side_summary(b),
        "matched": len(matched),
        "paired": len(usable),
        "excluded_failures": len(matched) - len(usable),
        "only_in_a": [k for k in by_a if k not in by_b],
        "only_in_b": [k for k in by_b if k not in by_a],
        "different_content": differ,
        "duplicate_ids": sorted(duplicates),  # a doc_id logged twice in a run cannot be paired: listed, not used
        "clustered": clustered,
        "notes": notes_a + notes_b,
    }
    binary = a.items.binary and b.items.binary
    bounds = (-100.0, 100.0) if binary else None
    withheld = [f"{name}: {side.judged.budget_error(side.samples_file.task)}" for name, side in (("A", a), ("B", b))
                if side.judged is not None and side.judged.over_budget]  # fmt: skip
    report["withheld"] = withheld
    if withheld:
        usable = []
    difference = paired_difference(va, vb, clusters, bounds=bounds) if usable else None
    report["difference"] = difference.to_dict() if difference else None
    mcnemar_p = None
    if binary and usable:
        only_a = sum(x > y for x, y in zip(va, vb, strict=True))
        only_b = sum(y > x for x, y in zip(va, vb, strict=True))
        mcnemar_p = mcnemar_exact(only_a, only_b)
        report["mcnemar"] = {"only_a": only_a, "only_b": only_b, "p": mcnemar_p}
    report["verdict"] = verdict(difference, unit="points" if binary else "", mcnemar_p=mcnemar_p)
    if not matched:
        report["verdict"] = f"no verdict: {nothing_paired(report)}"
    if withheld:
        report["verdict"] = "no verdict: the judge failed on too many items (" + "; ".join(withheld) + ")"
    return report


def nothing_paired(report: dict[str, Any]) -> str:
    """Why a comparison has no item in common (the exit reason of ``results compare``)."""
    return (
        f"the runs share no item ({len(report['only_in_a'])} only in A, {len(report['only_in_b'])} only in B, "
        f"{len(report['different_content'])} with one doc_id but a different id, video, question or answer); "
        "compare two runs of the same prepared data"
    )


def _side_summary(side: Side) -> dict[str, Any]:
    """The run's compared metric with its interval; for a judged task every judged metric (VALID and ALL)."""
    name = side.items.metric.split("[")[0]
    if side.judged is not None and name in MEASURES:
        interval: Interval | None = side.judged.intervals[name]
    else:
        clusters = [it.cluster for it in side.items.items] if side.items.clustered else None
        interval = mean_interval([it.value for it in side.items.items], clusters, side.items.bounds)
    judged = {m: side.judged.intervals[m].to_dict() for m in HEADLINE} if side.judged is not None else None
    return {
        "source": side.label,
        "samples": str(side.samples_file.path),
        "items": len(side.items.items),
        "failures": side.items.failures,
        "interval": interval.to_dict() if interval is not None and interval.n else None,
        "judged": judged,
        "over_budget": side.judged is not None and side.judged.over_budget,
    }


def _bound(value: float) -> str:
    """One decimal, two when one would round a small non-zero bound to 0.0 (it would read as touching 0)."""
    return f"{value:.2f}" if 0 < abs(value) < 0.95 else f"{value:.1f}"


def verdict(difference: Interval | None, unit: str = "points", mcnemar_p: float | None = None) -> str:
    """Plain words: "B is higher by 3.1 points, 95% CI 1.2-5.0", or "no detectable difference (...)".

    For yes/no metrics a difference is called only when the interval excludes 0 AND the exact McNemar
    test agrees (p < 1 - confidence): with few discordant items the percentile bootstrap is optimistic.
    """
    if difference is None or not (math.isfinite(difference.low) and math.isfinite(difference.high)):
        return "no verdict: too few paired items for an interval"
    suffix = f" {unit}" if unit else ""
    level = f"{difference.confidence * 100:g}% CI"
    span = f"{_bound(difference.low)} to {_bound(difference.high)}"
    excludes_zero = difference.low > 0 or difference.high < 0
    mcnemar_agrees = mcnemar_p is None or mcnemar_p < 1 - difference.confidence
    if excludes_zero and mcnemar_agrees:
        word = "higher" if difference.estimate > 0 else "lower"
        low, high = sorted((abs(difference.low), abs(difference.high)))
        return f"B is {word} by {abs(difference.estimate):.1f}{suffix}, {level} {_bound(low)}-{_bound(high)}"
    test = f"; exact McNemar p = {mcnemar_p:.3g}" if excludes_zero else ""  # why the interval alone is not enough
    return f"no detectable difference (B - A = {difference.estimate:+.1f}{suffix}, {level} {span}{test})"


def failure_rate(report: dict[str, Any]) -> tuple[int, int]:
    """(judge failures, items) over both runs: what the exit status is decided on."""
    return (report["a"]["failures"] + report["b"]["failures"], report["a"]["items"] + report["b"]["items"])


def _side_lines(name: str, side: dict[str, Any]) -> list[str]:
    """``- A: <samples> - <interval>; n items, f judge failure(s)`` and, for a judged task, VALID and ALL;
    a run over the judge failure budget shows no number, as in the leaderboard (the JSON keeps them)."""
    shown = Interval.from_dict(side["interval"]).describe() if side["interval"] else "n/a"
    if side.get("over_budget"):
        shown = f"judge failed ({side['failures']} of {side['items']} items), no score"
    lines = [f"- {name}: {side['samples']} - {shown}; {side['items']} items, {side['failures']} judge failure(s)"]
    for metric, iv in ({} if side.get("over_budget") else side.get("judged") or {}).items():
        way = "ALL, failures as wrong" if metric.endswith("_all") else "VALID, failures left out"
        lines.append(f"  - {metric} ({way}): {Interval.from_dict(iv).describe()}")
    return lines


def to_markdown(report: dict[str, Any]) -> str:
    """The report for people: each run's metric with its interval, the paired difference, the verdict."""

    def interval(iv: dict[str, Any] | None) -> str:
        if not iv:
            return "n/a"
        return Interval.from_dict(iv).describe()

    lines = [
        f"# {report['task']} / {report['metric']}: B vs A",
        "",
        f"**{report['verdict']}**",
        "",
        *(_side_lines("A", report["a"])),
        *(_side_lines("B", report["b"])),
        f"- matched items: {report['matched']}, paired: {report['paired']} "
        f"({report['excluded_failures']} left out for a judge failure in either run)",
        f"- B - A (paired): {interval(report['difference'])}",
    ]
    if "mcnemar" in report:
        m = report["mcnemar"]
        lines.append(f"- exact McNemar: only A right {m['only_a']}, only B right {m['only_b']}, p = {m['p']:.4g}")
    if not report["clustered"]:
        lines.append("- the samples name no video: items treated as independent (intervals may be too narrow)")
    for key, title in (
        ("only_in_a", "only in A"),
        ("only_in_b", "only in B"),
        ("different_content", "same doc_id, different id, video, question or answer (not paired)"),
        ("duplicate_ids", "logged more than once in a run (not paired)"),
    ):
        ids = report[key]
        if ids:
            more = f" (first {_LIST_LIMIT})" if len(ids) > _LIST_LIMIT else ""
            lines.append(f"- {len(ids)} item(s) {title}{more}: {', '.join(ids[:_LIST_LIMIT])}")
    lines += [f"- withheld: {w}" for w in report.get("withheld", [])]
    lines += [f"- note: {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"
