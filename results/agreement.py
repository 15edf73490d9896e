"""Judge comparisons on the leaderboard's HTML page: the same predictions under two judges, item by item.

Which items pair up (same task, configuration and prediction) is decided here; the statistics are the
judge layer's one implementation, :func:`llamavid_eval.judges.agreement.compare`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from llamavid_eval.core.outputs import judgement_failed, judgements
from llamavid_eval.judges.agreement import compare as judges_compare
from llamavid_eval.results.load import Run

VERDICT_LABELS = ["yes", "no", "failed"]


def _verdict_label(record: dict[str, Any]) -> str:
    return "failed" if judgement_failed(record) else ("yes" if record["verdict"] else "no")


def compare(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> dict[str, Any]:
    """Agreement statistics of two aligned judgement lists (see :func:`llamavid_eval.judges.agreement.compare`)."""
    return judges_compare(a, b, examples=0)


def verdict_matrix(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[list[int]]:
    """3x3 counts, rows = judge A's yes/no/failed, columns = judge B's."""
    matrix = [[0] * 3 for _ in VERDICT_LABELS]
    for x, y in zip(a, b, strict=True):
        matrix[VERDICT_LABELS.index(_verdict_label(x))][VERDICT_LABELS.index(_verdict_label(y))] += 1
    return matrix


@dataclass
class JudgePair:
    """Aligned judgements of one task's predictions by two judges."""

    task: str
    label: str  # which configuration (checkpoint, fps)
    judge_a: str
    judge_b: str
    ids: list[str] = field(default_factory=list)
    a: list[dict[str, Any]] = field(default_factory=list)
    b: list[dict[str, Any]] = field(default_factory=list)
    prediction_mismatches: int = 0  # items left out: not the same prediction, so not comparable

    @property
    def title(self) -> str:
        return f"{self.task} · {self.label}: {self.judge_a} vs {self.judge_b}"


def align(
    task: str, label: str, judge_a: str, records_a: dict[str, dict], judge_b: str, records_b: dict[str, dict]
) -> JudgePair:
    """Pair items by id; items whose predictions differ are counted, not compared."""
    pair = JudgePair(task=task, label=label, judge_a=judge_a, judge_b=judge_b)
    for item_id in sorted(set(records_a) & set(records_b), key=_natural):
        ra, rb = records_a[item_id], records_b[item_id]
        if str(ra.get("prediction", "")).strip() != str(rb.get("prediction", "")).strip():
            pair.prediction_mismatches += 1
            continue
        pair.ids.append(item_id)
        pair.a.append({**ra, "task": task, "doc_id": item_id, "judge": judge_a})
        pair.b.append({**rb, "task": task, "doc_id": item_id, "judge": judge_b})
    return pair


def _natural(item_id: str) -> tuple[float, str]:
    return (int(item_id), "") if item_id.isdigit() else (math.inf, item_id)


def find_pairs(runs: list[Run]) -> list[JudgePair]:
    """Every (task, configuration) judged by two different judges, in one run or across runs."""
    by_config: dict[tuple, dict[str, dict[str, dict]]] = {}
    labels: dict[tuple, str] = {}
    for run in runs:
        if run.kind != "measured":
            continue
        for task, path in run.samples.items():
            key = (task, run.model, run.checkpoint_path, run.fps, run.max_frames, run.extra_args)
            labels[key] = f"{run.checkpoint}, fps={'?' if run.fps is None else f'{run.fps:g}'}"
            for judge, records in judgements(path, task=task).items():
                by_config.setdefault(key, {}).setdefault(judge, records)
    pairs = []
    for key, judged in by_config.items():
        names = sorted(judged)
        for i, first in enumerate(names):
            for second in names[i + 1 :]:
                pair = align(key[0], labels[key], first, judged[first], second, judged[second])
                if pair.ids:
                    pairs.append(pair)
    return pairs


def side_by_side(pair: JudgePair) -> pd.DataFrame:
    """One row per item, disagreements first: what a human checks when two judges differ."""
    rows = []
    for item_id, ra, rb in zip(pair.ids, pair.a, pair.b, strict=True):
        la, lb = _verdict_label(ra), _verdict_label(rb)
        rows.append(
            {
                "id": item_id,
                "question": ra.get("question", ""),
                "answer": ra.get("answer", ""),
                "prediction": ra.get("prediction", ""),
                f"verdict A ({pair.judge_a})": la,
                "score A": ra.get("score"),
                f"verdict B ({pair.judge_b})": lb,
                "score B": rb.get("score"),
                "agree": la == lb,
            }
        )
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.sort_values("agree", kind="stable").reset_index(drop=True)


def flat_stats(stats: dict[str, Any]) -> dict[str, Any]:
    """Scalar statistics; a dict of scalars (e.g. ``confusion``) becomes ``confusion.yes_no`` entries and each
    interval a ``<statistic> 95% CI`` entry (``low to high``)."""
    out: dict[str, Any] = {}
    for key, value in stats.items():
        if key == "intervals" and isinstance(value, dict):
            out.update({f"{k} 95% CI": _interval_text(v) for k, v in value.items()})
        elif isinstance(value, dict):
            out.update(
                {f"{key}.{k}": v for k, v in value.items() if isinstance(v, (int, float, str, bool)) or v is None}
            )
        elif isinstance(value, (int, float, str, bool)) or value is None:
            out[key] = value
    return out


def _interval_text(interval: dict[str, Any]) -> str:
    low, high = interval.get("low"), interval.get("high")
    if not isinstance(low, float) or not isinstance(high, float) or not (math.isfinite(low) and math.isfinite(high)):
        return "n/a"
    return f"{low:.3g} to {high:.3g}"


def interval_method(stats: dict[str, Any]) -> str:
    """How the intervals of a comparison were made (one method for all of them)."""
    return next(iter(stats.get("intervals", {}).values()), {}).get("method", "no items compared")


def stats_markdown(pair: JudgePair, stats: dict[str, Any]) -> str:
    """Key/value table of the agreement statistics."""
    lines = [f"### {pair.title}", "", f"{len(pair.ids)} items compared"]
    if pair.prediction_mismatches:
        lines[-1] += f", {pair.prediction_mismatches} left out (different predictions)"
    lines[-1] += f"; intervals: {interval_method(stats)}"
    lines += ["", "| statistic | value |", "|---|---:|"]
    for key, value in flat_stats(stats).items():
        shown = "—" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))
        lines.append(f"| {key} | {shown} |")
    return "\n".join(lines) + "\n"
