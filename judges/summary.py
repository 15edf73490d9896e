"""Aggregate judgements into the metrics the re-judge CLI reports, through the one function every judged
number comes from (:func:`llamavid_eval.core.scores.judged_scores`)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from llamavid_eval.core.outputs import judge_label
from llamavid_eval.core.scores import JudgedScores, Verdict, judged_scores
from llamavid_eval.judges.base import Judgement


def verdict(judgement: Judgement, cluster: str | None = None) -> Verdict:
    """A judgement as :mod:`llamavid_eval.core.scores` reads it (a failure keeps its reason)."""
    if judgement.failed or judgement.verdict is None or judgement.score is None:
        return Verdict(cluster, None, None, judgement.error or "no verdict")
    return Verdict(cluster, bool(judgement.verdict), float(judgement.score))


def summarize(judgements: Iterable[Judgement], clusters: Sequence[str | None] | None = None) -> dict[str, Any]:
    """``n``, ``accuracy`` (% yes among non-failed, 0-100), ``mean_score`` (non-failed), ``failures``, ``judge``.

    Failed items are excluded from accuracy and mean score but counted in ``failures`` - never read
    as "no". With nothing judged successfully, ``accuracy`` and ``mean_score`` are ``None``.
    """
    return summary(*scored(judgements, clusters))


def scored(
    judgements: Iterable[Judgement], clusters: Sequence[str | None] | None = None
) -> tuple[JudgedScores, list[Judgement]]:
    """:func:`judged_scores` of ``judgements`` (clustered by ``clusters``, e.g. videos), and the judgements."""
    items = list(judgements)
    found = clusters if clusters is not None else [None] * len(items)
    return judged_scores([verdict(j, c) for j, c in zip(items, found, strict=True)]), items


def summary(scores: JudgedScores, judgements: Sequence[Judgement]) -> dict[str, Any]:
    """What :func:`summarize` reports, from scores already computed (the bootstrap runs once)."""
    names = sorted({judge_label(j.backend, j.model) for j in judgements})

    def value(metric: str) -> float | None:
        estimate = scores.intervals[metric].estimate
        return None if math.isnan(estimate) else estimate

    return {
        "n": scores.n,
        "accuracy": value("accuracy"),
        "mean_score": value("mean_score"),
        "failures": scores.failures,
        "judge": ", ".join(names) if names else None,
    }
