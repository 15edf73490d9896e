"""Judged metrics: every item of a task judged in ONE ``judge_many`` batch at aggregation time.

``process_results`` only records ``{id, question, answer, prediction, video}`` (the re-judge CLI reads
those keys from the logged samples; ``video`` clusters the intervals), one copy per metric
(:func:`judged_process_results`). lmms-eval calls one aggregation per metric, so the judgements are
memoised by content: the batch is judged once, whatever the number of metrics. The judgement of each
record is also written into the record (key ``judgement``), which lands in the logged samples when
lmms-eval writes them after aggregation, as does its per-item value (``tasks/common/intervals.py``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from llamavid_eval.judges import Judgement, JudgeRequest, get_judge, resolve_settings, summarize
from llamavid_eval.judges.parse import SCORE_RANGE
from llamavid_eval.tasks.common.intervals import ItemValues, ci_aggregations, mark_mean, metric_records

_MEMO: dict[str, list[Judgement]] = {}
_MEMO_SIZE = 8


def _judge_config(task_config: Any) -> Mapping[str, Any] | None:
    """The judge settings a task's YAML gives in its ``metadata`` (None: defaults and environment only)."""
    metadata = getattr(task_config, "metadata", None)
    return metadata if isinstance(metadata, Mapping) else None


def _judgements(records: Sequence[dict[str, Any]], task_config: Any, annotate: bool) -> list[Judgement]:
    """The judgements of ``records`` (judged once per content and judge), written into them if ``annotate``."""
    config = _judge_config(task_config)
    payload = [(r["question"], r["answer"], r["prediction"]) for r in records]
    key = hashlib.sha256(json.dumps([resolve_settings(config).public(), payload], default=str).encode()).hexdigest()
    if key not in _MEMO:
        judgements = get_judge(config).judge_many([JudgeRequest(q, a, p) for q, a, p in payload])
        if len(_MEMO) >= _MEMO_SIZE:
            _MEMO.pop(next(iter(_MEMO)))
        _MEMO[key] = judgements
    judgements = _MEMO[key]
    if annotate:
        for record, judgement in zip(records, judgements, strict=True):
            record["judgement"] = judgement.to_dict()
    return judgements


def judged_summary(records: Sequence[dict[str, Any]], task_config: Any = None) -> dict[str, Any]:
    """``summarize`` of the judgements of ``records`` (judged once per content and judge)."""
    return summarize(_judgements(records, task_config, annotate=True))


def judged_values(
    records: Sequence[dict[str, Any]], task_config: Any = None, metric: str = "accuracy", *, annotate: bool = True
) -> list[float | None]:
    """Per-item value of a judged metric: ``accuracy`` 100 (match) or 0, ``mean_score`` the 0-5 score;
    None for a failed judgement (left out of the metric and its interval, as ``summarize`` does)."""
    if metric not in ("accuracy", "mean_score"):
        raise ValueError(f"judged metric {metric!r} has no per-item value; use 'accuracy' or 'mean_score'")
    values: list[float | None] = []
    for j in _judgements(records, task_config, annotate):
        if j.failed or j.verdict is None or j.score is None:
            values.append(None)
        else:
            values.append(100.0 * bool(j.verdict) if metric == "accuracy" else float(j.score))
    return values


def judged_accuracy(records: Sequence[dict[str, Any]], task_config: Any = None) -> float:
    """Percent of judged items the judge called a match (failures excluded, counted separately; nan if all failed).

    Each record also gets its 0/100 value for lmms-eval's stderr columns (``tasks/common/intervals.py``)."""
    return mark_mean(records, judged_values(records, task_config, "accuracy"))


def judged_mean_score(records: Sequence[dict[str, Any]], task_config: Any = None) -> float:
    """Mean 0-5 judge score over the items that did not fail (nan if all failed); per-item scores as above."""
    return mark_mean(records, judged_values(records, task_config, "mean_score"))


def judge_failures(records: Sequence[dict[str, Any]], task_config: Any = None) -> int:
    """Items whose judgement could not be obtained or parsed (recorded, never re-sampled)."""
    return judged_summary(records, task_config)["failures"]


def _interval_values(metric: str) -> ItemValues:
    """Values for the interval metrics: the same judgements, not written again into their record copies
    (the logged samples then hold each judgement once per metric that reports it, not per interval row)."""

    def values(records: Sequence[dict[str, Any]], task_config: Any) -> list[float | None]:
        return judged_values(records, task_config, metric, annotate=False)

    return values


JUDGED_METRICS = ("accuracy", "mean_score", "judge_failures")
JUDGED_INTERVALS = {
    **ci_aggregations("accuracy", _interval_values("accuracy")),
    **ci_aggregations("mean_score", _interval_values("mean_score"), bounds=SCORE_RANGE),
}
"""``accuracy_ci_low`` ... ``mean_score_n``: the task utils expose them under these names for the YAMLs."""
JUDGED_AGGREGATIONS = (judged_accuracy, judged_mean_score, judge_failures, *JUDGED_INTERVALS.values())


def judged_process_results(record: dict[str, Any], video: str) -> dict[str, dict[str, Any]]:
    """A judged item's record under each judged metric and interval row, one copy each, naming its video."""
    return metric_records(record, video, (*JUDGED_METRICS, *JUDGED_INTERVALS))


def check_judge(task_config: Any) -> None:
    """Build the judge and check it against its server (``judges.preflight``) when the task is built, so a
    judge that cannot work stops the run in seconds, before the video model runs, not after it at aggregation.
    Raises ``JudgeUnavailable`` naming backend, URL, model, the server's reason and the fix."""
    from llamavid_eval.judges.preflight import check_once

    config = _judge_config(task_config)
    get_judge(config).close()  # settings errors (unknown backend, no API key) before any request
    check_once(resolve_settings(config))
