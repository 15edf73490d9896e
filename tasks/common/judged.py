"""Judged metrics: every item of a task judged in ONE ``judge_many`` batch at aggregation time.

``process_results`` only records ``{id, question, answer, prediction}`` (the re-judge CLI reads those
keys from the logged samples). lmms-eval calls one aggregation per metric with the same records, so
the judgements are memoised by content: the batch is judged once, whatever the number of metrics.
The judgement of each record is also written into the record (key ``judgement``), which lands in
the logged samples when lmms-eval writes them after aggregation.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from llamavid_eval.judges import Judgement, JudgeRequest, get_judge, resolve_settings, summarize

_MEMO: dict[str, tuple[list[Judgement], dict[str, Any]]] = {}
_MEMO_SIZE = 8


def judged_summary(records: Sequence[dict[str, Any]], task_config: Any = None) -> dict[str, Any]:
    """``summarize`` of the judgements of ``records`` (judged once per content and judge)."""
    metadata = getattr(task_config, "metadata", None)
    config = metadata if isinstance(metadata, Mapping) else None
    payload = [(r["question"], r["answer"], r["prediction"]) for r in records]
    key = hashlib.sha256(json.dumps([resolve_settings(config).public(), payload], default=str).encode()).hexdigest()
    if key not in _MEMO:
        judgements = get_judge(config).judge_many([JudgeRequest(q, a, p) for q, a, p in payload])
        if len(_MEMO) >= _MEMO_SIZE:
            _MEMO.pop(next(iter(_MEMO)))
        _MEMO[key] = (judgements, summarize(judgements))
    judgements, summary = _MEMO[key]
    for record, judgement in zip(records, judgements, strict=True):
        record["judgement"] = judgement.to_dict()
    return summary


def judged_accuracy(records: Sequence[dict[str, Any]], task_config: Any = None) -> float:
    """Percent of judged items the judge called a match (failures excluded, counted separately; nan if all failed)."""
    value = judged_summary(records, task_config)["accuracy"]
    return math.nan if value is None else value


def judged_mean_score(records: Sequence[dict[str, Any]], task_config: Any = None) -> float:
    """Mean 0-5 judge score over the items that did not fail (nan if all failed)."""
    value = judged_summary(records, task_config)["mean_score"]
    return math.nan if value is None else value


def judge_failures(records: Sequence[dict[str, Any]], task_config: Any = None) -> int:
    """Items whose judgement could not be obtained or parsed (recorded, never re-sampled)."""
    return judged_summary(records, task_config)["failures"]


JUDGED_AGGREGATIONS = (judged_accuracy, judged_mean_score, judge_failures)


def check_judge(task_config: Any) -> None:
    """Build the judge and check it against its server (``judges.preflight``) when the task is built, so a
    judge that cannot work stops the run in seconds, before the video model runs, not after it at aggregation.
    Raises ``JudgeUnavailable`` naming backend, URL, model, the server's reason and the fix."""
    from llamavid_eval.judges.preflight import check_once

    metadata = getattr(task_config, "metadata", None)
    config = metadata if isinstance(metadata, Mapping) else None
    get_judge(config).close()  # settings errors (unknown backend, no API key) before any request
    check_once(resolve_settings(config))
