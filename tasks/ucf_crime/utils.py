"""Hooks for ``ucf_crime`` (multiple choice, mapped answers) and ``ucf_crime_judged`` (the study's protocol).

fps is not a task setting: the ``llamavid`` backend samples frames (``--model_args ...,fps=1`` or ``fps=6``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from datasets import Dataset
from llamavid_eval.tasks.common import intervals
from llamavid_eval.tasks.common.judged import JUDGED_INTERVALS, judge_failures, judged_accuracy, judged_mean_score
from llamavid_eval.tasks.common.judged import judged_process_results as judged_records
from llamavid_eval.tasks.common.local_task import LocalVideoTask
from llamavid_eval.tasks.ucf_crime import confusion
from llamavid_eval.tasks.ucf_crime.labels import (
    CLASSES,
    JUDGED_NAMES,
    JUDGED_PROMPT,
    MC_PROMPT,
    NORMAL,
    UNMAPPED,
    map_answer,
    mc_answer,
)
from loguru import logger

from llamavid_eval.core.paths import resolve_video
from llamavid_eval.core.records import qa_record

__all__ = ["LocalVideoTask", "judge_failures", "judged_accuracy", "judged_mean_score"]
Record = dict[str, Any]


def doc_to_visual(doc: Record) -> list[str]:
    return [resolve_video(doc["video"])]


def doc_to_text(doc: Record) -> str:
    return MC_PROMPT


def doc_to_target(doc: Record) -> str:
    return mc_answer(doc["label"])


def process_results(doc: Record, results: list[str]) -> dict[str, Record]:
    """One ``{id, gold, pred, prediction, video}`` record per metric key (metrics are computed over them)."""
    record = {"id": doc["id"], "gold": doc["label"], "pred": map_answer(results[0]), "prediction": results[0]}
    return intervals.metric_records(record, doc["video"], METRICS)


def _accuracy(records: Sequence[Record]) -> float:
    return 100.0 * sum(r["pred"] == r["gold"] for r in records) / len(records) if records else math.nan


def _correct_values(records: Sequence[Record], task_config: Any = None, cls: str | None = None) -> list[float | None]:
    """100 when the mapped answer is the gold class, else 0; None for videos outside class ``cls``."""
    return [100.0 * (r["pred"] == r["gold"]) if cls is None or r["gold"] == cls else None for r in records]


def _side(cls: str) -> bool | None:
    """Anomaly (False) or Normal (True); UNMAPPED is on neither side."""
    return None if cls == UNMAPPED else cls == NORMAL


def _binary_values(records: Sequence[Record], task_config: Any = None) -> list[float | None]:
    return [100.0 * (_side(r["pred"]) == _side(r["gold"])) for r in records]


def accuracy(records: Sequence[Record], args: Any = None, task_config: Any = None) -> float:
    """Percent of videos whose mapped answer is the gold class (UNMAPPED counts as wrong).

    Also writes the confusion matrix (see ``tasks/ucf_crime/confusion.py`` for where)."""
    task = getattr(task_config, "task", "ucf_crime")
    path = confusion.write(records, task, args)
    logger.info(
        f"[{task}] confusion matrix (rows gold, columns predicted){f' written to {path}' if path else ''}:\n{confusion.to_csv(confusion.confusion_matrix(records))}"
    )
    return intervals.mark_mean(records, _correct_values(records))


def macro_accuracy(records: Sequence[Record]) -> float:
    """Mean of the per-class accuracies over the classes present among the gold labels."""
    present = sorted({r["gold"] for r in records})
    return sum(_accuracy([r for r in records if r["gold"] == c]) for c in present) / len(present)


def binary_accuracy(records: Sequence[Record]) -> float:
    """Anomaly vs Normal: percent of videos where the prediction is on the gold side (UNMAPPED is on neither)."""
    return intervals.mark_mean(records, _binary_values(records))


def unmapped(records: Sequence[Record]) -> int:
    """Answers that named no class (or several) and so could not be mapped."""
    return sum(r["pred"] == UNMAPPED for r in records)


def _class_accuracy(cls: str) -> Callable[[Sequence[Record]], float]:
    def class_accuracy(records: Sequence[Record]) -> float:
        return intervals.mark_mean(records, _correct_values(records, cls=cls))

    class_accuracy.__doc__ = f"Percent of {cls} videos classified as {cls} (nan when the split has none)."
    return class_accuracy


PER_CLASS = {f"acc_{c.lower()}": _class_accuracy(c) for c in CLASSES}
globals().update(PER_CLASS)  # the YAML names them: !function utils.acc_abuse, ...
INTERVALS = {
    **intervals.ci_aggregations("accuracy", _correct_values),
    **intervals.ci_aggregations("binary_accuracy", _binary_values),
}
globals().update(INTERVALS)  # !function utils.accuracy_ci_low, ...
METRICS = ("accuracy", "macro_accuracy", "binary_accuracy", "unmapped", *PER_CLASS, *INTERVALS)
# ucf_crime_judged's intervals, prefixed: this module also holds ucf_crime's own accuracy_ci_low etc.
globals().update({f"judged_{name}": fn for name, fn in JUDGED_INTERVALS.items()})


def judged_process_docs(dataset: Dataset) -> Dataset:
    """Keep the classes the study's prompt offers; every kept doc carries how many were left out."""
    kept = dataset.filter(lambda d: d["label"] in JUDGED_NAMES)
    excluded = len(dataset) - len(kept)
    logger.info(
        f"[ucf_crime_judged] {excluded} test videos of classes not in the prompt (Shoplifting, Stealing, Vandalism) excluded; {len(kept)} kept"
    )
    return kept.map(lambda d: {"excluded_videos": excluded})


def judged_doc_to_text(doc: Record) -> str:
    return JUDGED_PROMPT


def judged_doc_to_target(doc: Record) -> str:
    return JUDGED_NAMES[doc["label"]]


def judged_process_results(doc: Record, results: list[str]) -> dict[str, Any]:
    record = qa_record(doc["id"], JUDGED_PROMPT, JUDGED_NAMES[doc["label"]], results[0])
    return {**judged_records(record, doc["video"]), "excluded_videos": doc["excluded_videos"]}


def excluded_videos(counts: Sequence[int]) -> int:
    """Test videos left out because their class is not among the prompt's 11 categories."""
    return counts[0]
