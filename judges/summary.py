"""Aggregate judgements into the metrics the tasks and the re-judge CLI report."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from llamavid_eval.judges.base import Judgement

from llamavid_eval.core.outputs import judge_label


def summarize(judgements: Iterable[Judgement]) -> dict[str, Any]:
    """``n``, ``accuracy`` (% yes among non-failed, 0-100), ``mean_score`` (non-failed), ``failures``, ``judge``.

    Failed items are excluded from accuracy and mean score but counted in ``failures`` - never read
    as "no". With nothing judged successfully, ``accuracy`` and ``mean_score`` are ``None``.
    """
    items = list(judgements)
    ok = [j for j in items if not j.failed and j.verdict is not None and j.score is not None]
    names = sorted({judge_label(j.backend, j.model) for j in items})
    return {
        "n": len(items),
        "accuracy": 100.0 * sum(1 for j in ok if j.verdict) / len(ok) if ok else None,
        "mean_score": sum(j.score for j in ok) / len(ok) if ok else None,  # type: ignore[misc]
        "failures": len(items) - len(ok),
        "judge": ", ".join(names) if names else None,
    }
