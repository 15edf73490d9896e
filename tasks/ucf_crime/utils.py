"""Hooks for ``ucf_crime`` (multiple choice, mapped answers) and ``ucf_crime_judged`` (the study's protocol).

fps is not a task setting: the ``llamavid`` backend samples frames (``--model_args ...,fps=1`` or ``fps=6``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from datasets import Dataset
from llamavid_eval.tasks.common.judged import judge_failures, judged_accuracy, judged_mean_score
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
    """One ``{id, gold, pred, prediction}`` record under every metric key (metrics are computed over them)."""
    record = {"id": doc["id"], "gold": doc["label"], "pred": map_answer(results[0]), "prediction": results[0]}
    return {name: record for name in METRICS}


def _accuracy(records: Sequence[Record]) -> float:
    return 100.0 * sum(r["pred"] == r["gold"] for r in records) / len(records) if records else math.nan


def accuracy(records: Sequence[Record], args: Any = None, task_config: Any = None) -> float:
    """Percent of videos whose mapped answer is the gold class (UNMAPPED counts as wrong).

    Also writes the confusion matrix (see ``tasks/ucf_crime/confusion.py`` for where)."""
    task = getattr(task_config, "task", "ucf_crime")
    path = confusion.write(records, task, args)
    logger.info(
        f"[{task}] confusion matrix (rows gold, columns predicted){f' written to {path}' if path else ''}:\n{confusion.to_csv(confusion.confusion_matrix(records))}"
    )
    return _accuracy(records)


def macro_accuracy(records: Sequence[Record]) -> float:
    """Mean of the per-class accuracies over the classes present among the gold labels."""
    present = sorted({r["gold"] for r in records})
    return sum(_accuracy([r for r in records if r["gold"] == c]) for c in present) / len(present)


def binary_accuracy(records: Sequence[Record]) -> float:
    """Anomaly vs Normal: percent of videos where the prediction is on the gold side (UNMAPPED is on neither)."""

    def side(cls: str) -> str | None:
        return None if cls == UNMAPPED else cls == NORMAL

    return 100.0 * sum(side(r["pred"]) == side(r["gold"]) for r in records) / len(records)


def unmapped(records: Sequence[Record]) -> int:
    """Answers that named no class (or several) and so could not be mapped."""
    return sum(r["pred"] == UNMAPPED for r in records)


def _class_accuracy(cls: str) -> Callable[[Sequence[Record]], float]:
    def class_accuracy(records: Sequence[Record]) -> float:
        return _accuracy([r for r in records if r["gold"] == cls])

    class_accuracy.__doc__ = f"Percent of {cls} videos classified as {cls} (nan when the split has none)."
    return class_accuracy


PER_CLASS = {f"acc_{c.lower()}": _class_accuracy(c) for c in CLASSES}
globals().update(PER_CLASS)  # the YAML names them: !function utils.acc_abuse, ...
METRICS = ("accuracy", "macro_accuracy", "binary_accuracy", "unmapped", *PER_CLASS)


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
    return {
        "accuracy": record,
        "mean_score": record,
        "judge_failures": record,
        "excluded_videos": doc["excluded_videos"],
    }


def excluded_videos(counts: Sequence[int]) -> int:
    """Test videos left out because their class is not among the prompt's 11 categories."""
    return counts[0]
